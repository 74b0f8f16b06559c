//! The HTTP port, an axum `Router`: `/metrics` (Prometheus text),
//! `/healthz` (200 "ok" when the database and context store answer, 200
//! "degraded" and why when only the context store does, 503 "down" and why
//! when it does not), `/mcp` (each tenant's tools for AI agents, see
//! [`crate::mcp`]) and, with the demo on, the demo's order API
//! (`/demo/orders/{id}`); anything else is 404.
//!
//! The port listens on loopback unless the operator says otherwise
//! (`HTTP_HOST`). Listening beyond loopback, `/metrics` (which names every
//! tenant and plugin) answers only callers bearing the operator key.
//!
//! Connections are served by hyper's HTTP/1 with a header-read timeout
//! ([`HEADER_READ_TIMEOUT`]). Its timer runs whenever a connection waits for
//! a request's head (from the connection's start, and again after each
//! response), so it disconnects both a client that is slow over its headers
//! and a keep-alive connection left idle with no request.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::auth::bears_operator_key;
use crate::engine::Engine;
use crate::mcp::{KeyCheck, McpSettings};

/// How long a connection may wait for a complete request head: from when
/// it opens or finishes a response, to the end of the next request's
/// headers. Past it the connection is closed, so it is also the idle
/// timeout of keep-alive connections.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait before accepting again when accepting failed (out of
/// file descriptors, say), rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who may read `/metrics`.
#[derive(Clone)]
pub enum MetricsAccess {
    /// Whoever reaches the port: it listens on loopback only.
    Open,
    /// Callers bearing this operator key; none if no key is configured.
    OperatorKey(Option<Arc<str>>),
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    started: std::time::Instant,
    metrics_access: MetricsAccess,
}

/// What the tool routes need.
#[derive(Clone)]
pub struct ToolRoutes {
    pub settings: McpSettings,
    pub keys: KeyCheck,
}

/// The port's routes; with `demo`, the demo tenant's order API too.
pub fn router(
    engine: Arc<Engine>,
    started: std::time::Instant,
    demo: bool,
    metrics_access: MetricsAccess,
    tools: ToolRoutes,
) -> Router {
    let seed_002 = Router::new()
        .route("/mcp/discover", get(crate::tool_http::discover))
        .route("/mcp/execute", post(crate::tool_http::execute))
        .with_state(crate::tool_http::ToolHttp {
            engine: engine.clone(),
            call_timeout: tools.settings.call_timeout,
        });
    let agents = Router::new()
        .route_service("/mcp", crate::mcp::service(engine.clone(), &tools.settings))
        .merge(seed_002)
        .route_layer(axum::middleware::from_fn_with_state(
            tools.keys,
            crate::mcp::require_tool_key,
        ));
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    if demo {
        router = router.route("/demo/orders/{*id}", get(demo_order));
    }
    router
        .with_state(AppState {
            engine,
            started,
            metrics_access,
        })
        .merge(agents)
        .fallback(not_found)
}

/// Serves until the process ends; with `demo`, the demo tenant's order API
/// too (`/demo/orders/{id}`). `/metrics` is open on a loopback listener and
/// needs `operator_key` on any other.
pub async fn serve_http(
    listener: TcpListener,
    engine: Arc<Engine>,
    started: std::time::Instant,
    demo: bool,
    operator_key: Option<Arc<str>>,
    tools: ToolRoutes,
) {
    let loopback = listener
        .local_addr()
        .is_ok_and(|address| address.ip().is_loopback());
    let access = if loopback {
        MetricsAccess::Open
    } else {
        MetricsAccess::OperatorKey(operator_key)
    };
    serve(
        listener,
        router(engine, started, demo, access, tools),
        HEADER_READ_TIMEOUT,
    )
    .await
}

/// Serves `app` on `listener` (HTTP/1.1) until the process ends, closing
/// connections that take longer than `header_read` to send a request head.
pub async fn serve(listener: TcpListener, app: Router, header_read: Duration) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "accepting an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection");
            }
        });
    }
}

async fn metrics(State(state): State<AppState>, headers: header::HeaderMap) -> Response {
    if let MetricsAccess::OperatorKey(key) = &state.metrics_access {
        let allowed = bears_operator_key(headers.get(header::AUTHORIZATION), key.as_deref());
        if !allowed {
            let mut response = respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "/metrics on a non-loopback address needs authorization: Bearer <MCP_ADMIN_KEY>\n"
                    .to_owned(),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return response;
        }
    }
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        state
            .engine
            .metrics
            .render(state.started.elapsed(), state.engine.data_path_figures()),
    )
}

async fn healthz(State(state): State<AppState>) -> Response {
    let health = state.engine.health().await;
    let mut text = health.state().to_owned() + "\n";
    for reason in health.reasons() {
        text += &format!("{reason}\n");
    }
    match health.state() {
        "serving" => respond(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        // Still answering turns: a load balancer should keep sending them.
        "degraded" => respond(StatusCode::OK, "text/plain", text),
        _ => respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", text),
    }
}

async fn demo_order(uri: Uri) -> Response {
    match crate::demo::order_api(uri.path()) {
        Some((status, body)) => respond(
            StatusCode::from_u16(status).expect("a valid status"),
            "application/json",
            body,
        ),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain",
        "not found\n".to_owned(),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// How long a test waits for the server to close a connection before
    /// it fails (a guard against hanging, not a measure of speed).
    const GUARD: Duration = Duration::from_secs(20);

    async fn start(header_read: Duration) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hello", get(|| async { "hello\n" }))
            .fallback(not_found);
        tokio::spawn(serve(listener, app, header_read));
        address
    }

    /// Reads one response with a Content-Length body: (status, body).
    async fn read_response(stream: &mut TcpStream) -> (u16, String) {
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !seen.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.unwrap();
            assert_eq!(
                n,
                1,
                "closed mid-head: {:?}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
        let head = String::from_utf8(seen).unwrap();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .expect("a content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    /// Waits for the server to close the connection: true if it did.
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        match tokio::time::timeout(GUARD, stream.read_to_end(&mut rest)).await {
            Ok(Ok(_)) => {
                assert!(
                    !String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 200"),
                    "answered a partial request: {rest:?}"
                );
                true
            }
            // Reset by the server.
            Ok(Err(_)) => true,
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_headers_is_disconnected() {
        let address = start(Duration::from_millis(200)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Half")
            .await
            .unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_request_line_is_disconnected() {
        let address = start(Duration::from_millis(200)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /hel").await.unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let address = start(Duration::from_secs(1)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        for _ in 0..2 {
            stream
                .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(
                read_response(&mut stream).await,
                (200, "hello\n".to_owned())
            );
        }
        // Kept alive across requests; then, with none, closed.
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn a_connection_that_never_sends_is_closed() {
        let address = start(Duration::from_secs(1)).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn a_keep_alive_connection_serves_requests_until_closed_and_unknown_paths_are_404() {
        let address = start(HEADER_READ_TIMEOUT).await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /nowhere HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut stream).await,
            (404, "not found\n".to_owned())
        );
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            read_response(&mut stream).await,
            (200, "hello\n".to_owned())
        );
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
