//! The operator's HTTP port: `/metrics` (Prometheus text) and `/healthz`
//! (200 when the database and context store answer, 503 otherwise).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::engine::Engine;

/// Serves until the process ends; with `demo`, the demo tenant's order API
/// too (`/demo/orders/{id}`).
pub async fn serve_http(listener: TcpListener, engine: Arc<Engine>, started: Instant, demo: bool) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let engine = engine.clone();
                async move {
                    let path = request.uri().path();
                    if demo && let Some((status, body)) = crate::demo::order_api(path) {
                        let status = StatusCode::from_u16(status).expect("a valid status");
                        return Ok::<_, Infallible>(respond(status, "application/json", body));
                    }
                    Ok(route(&engine, path, started).await)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(engine: &Engine, path: &str, started: Instant) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            engine.metrics.render(started.elapsed()),
        ),
        "/healthz" => {
            let failing: Vec<String> = engine
                .probe_dependencies()
                .await
                .into_iter()
                .filter_map(|(name, _, _, error)| error.map(|e| format!("{name}: {e}")))
                .collect();
            if failing.is_empty() {
                (StatusCode::OK, "text/plain", "ok\n".to_owned())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    failing.join("\n") + "\n",
                )
            }
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    respond(status, content_type, body)
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
