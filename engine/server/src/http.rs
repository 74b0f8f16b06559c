//! The operator's HTTP port, an axum `Router`: `/metrics` (Prometheus
//! text), `/healthz` (200 when the database and context store answer, 503
//! otherwise) and, with the demo on, the demo's order API
//! (`/demo/orders/{id}`); anything else is 404.
//!
//! Connections are served by hyper's HTTP/1 with two timeouts
//! ([`HttpTimeouts`]): a client that starts a request but does not finish
//! its headers in time is disconnected, and so is a connection that sits
//! with no request (no byte either way, no request in flight) for too long.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::engine::Engine;

/// How long a client may take over a request's headers, from their first
/// byte: past it, the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may stay open with no request: no byte read or
/// written and no request being answered. A scraper that comes back every
/// minute keeps its connection.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// How long to wait before accepting again when accepting failed (out of
/// file descriptors, say), rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP port's connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> HttpTimeouts {
        HttpTimeouts {
            header_read: HEADER_READ_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

#[derive(Clone)]
struct AppState {
    engine: Arc<Engine>,
    started: std::time::Instant,
}

/// The port's routes; with `demo`, the demo tenant's order API too.
pub fn router(engine: Arc<Engine>, started: std::time::Instant, demo: bool) -> Router {
    let mut router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz));
    if demo {
        router = router.route("/demo/orders/{*id}", get(demo_order));
    }
    router
        .fallback(not_found)
        .with_state(AppState { engine, started })
}

/// Serves until the process ends, with the default timeouts; with `demo`,
/// the demo tenant's order API too (`/demo/orders/{id}`).
pub async fn serve_http(
    listener: TcpListener,
    engine: Arc<Engine>,
    started: std::time::Instant,
    demo: bool,
) {
    serve(
        listener,
        router(engine, started, demo),
        HttpTimeouts::default(),
    )
    .await
}

/// Serves `app` on `listener` (HTTP/1.1) until the process ends.
pub async fn serve(listener: TcpListener, app: Router, timeouts: HttpTimeouts) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::debug!(%error, "accepting an HTTP connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(
            http.clone(),
            stream,
            app.clone(),
            timeouts.idle,
        ));
    }
}

/// One connection, until the client closes it, a timeout does, or it
/// fails.
async fn serve_connection(http: http1::Builder, stream: TcpStream, app: Router, idle: Duration) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let app = TowerToHyperService::new(app);
    let service = {
        let activity = activity.clone();
        service_fn(move |request: hyper::Request<Incoming>| {
            let busy = Busy::start(activity.clone());
            let response = app.call(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        })
    };
    let connection = http.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    loop {
        let now = Instant::now();
        let deadline = if activity.busy() {
            now + idle
        } else {
            activity.last() + idle
        };
        if deadline <= now {
            // Closes at once when between requests (hyper's graceful
            // shutdown of an idle HTTP/1 connection).
            connection.as_mut().graceful_shutdown();
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection");
            }
            return;
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "HTTP connection");
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being answered.
struct Activity {
    opened: Instant,
    /// Nanoseconds from `opened` to the last byte read or written.
    last: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let nanos = u64::try_from(self.opened.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last.store(nanos, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed) > 0
    }
}

/// A request being answered, for as long as it lives.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's stream that notes when bytes go either way.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    respond(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        state.engine.metrics.render(state.started.elapsed()),
    )
}

async fn healthz(State(state): State<AppState>) -> Response {
    let failing: Vec<String> = state
        .engine
        .probe_dependencies()
        .await
        .into_iter()
        .filter_map(|(name, _, _, error)| error.map(|e| format!("{name}: {e}")))
        .collect();
    if failing.is_empty() {
        respond(StatusCode::OK, "text/plain", "ok\n".to_owned())
    } else {
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            failing.join("\n") + "\n",
        )
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

    /// Longer than any test waits for: a test that reaches it has failed.
    const NEVER: Duration = Duration::from_secs(600);
    /// How long a test waits for the server to close a connection before
    /// it fails (a guard against hanging, not a measure of speed).
    const GUARD: Duration = Duration::from_secs(20);

    async fn start(timeouts: HttpTimeouts) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hello", get(|| async { "hello\n" }))
            .fallback(not_found);
        tokio::spawn(serve(listener, app, timeouts));
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
        let address = start(HttpTimeouts {
            header_read: Duration::from_millis(200),
            idle: NEVER,
        })
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: test\r\nX-Half")
            .await
            .unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn a_client_that_stops_mid_request_line_is_disconnected() {
        let address = start(HttpTimeouts {
            header_read: Duration::from_millis(200),
            idle: NEVER,
        })
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET /hel").await.unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let address = start(HttpTimeouts {
            header_read: NEVER,
            idle: Duration::from_secs(1),
        })
        .await;
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
        let address = start(HttpTimeouts {
            header_read: NEVER,
            idle: Duration::from_secs(1),
        })
        .await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        assert!(closed_by_server(&mut stream).await);
    }

    #[tokio::test]
    async fn a_keep_alive_connection_serves_requests_until_closed_and_unknown_paths_are_404() {
        let address = start(HttpTimeouts::default()).await;
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

    #[test]
    fn default_timeouts_are_the_named_constants() {
        assert_eq!(
            HttpTimeouts::default(),
            HttpTimeouts {
                header_read: HEADER_READ_TIMEOUT,
                idle: IDLE_TIMEOUT,
            }
        );
    }
}
