//! The HTTP port of the real binary: `/metrics` (only the uptime before any
//! turn; the other series appear with their first value), `/healthz`, the demo's order API only with the demo on, and
//! 404 for anything else. (Its timeouts are tested in `http.rs`'s unit
//! tests, with short ones; `/metrics` after turns in e2e.rs and turns.rs.)

mod common;

use std::collections::HashMap;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A GET on a connection of its own: (status line, headers, body).
async fn get(address: &str, path: &str) -> (String, String, String) {
    get_with(address, path, "").await
}

/// A GET with extra header lines (each ending in CRLF).
async fn get_with(address: &str, path: &str, headers: &str) -> (String, String, String) {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_lowercase(), body.to_owned())
}

#[tokio::test]
async fn the_http_port_serves_metrics_and_health_and_404s_the_rest() {
    let engine = start(HashMap::new()).await;

    let (status, headers, text) = get(&engine.http, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: text/plain; version=0.0.4"),
        "{headers}"
    );
    // Before any turn only the uptime has a value; the other series appear
    // with their first turn (e2e.rs and turns.rs read them).
    assert!(text.contains("# TYPE mcp_uptime_seconds gauge\n"), "{text}");
    assert!(text.contains("\nmcp_uptime_seconds "), "{text}");

    assert_eq!(
        http_get(&engine.http, "/healthz").await,
        (200, "ok\n".to_owned())
    );
    for path in ["/", "/nowhere", "/metrics/more", "/demo/orders/AB1234"] {
        let (status, headers, body) = get(&engine.http, path).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
        assert!(headers.contains("content-type: text/plain"), "{headers}");
        assert_eq!(body, "not found\n", "{path}");
    }
}

#[tokio::test]
async fn the_demo_serves_its_order_api() {
    let (engine, _output) = start_with(&["serve", "--demo"], HashMap::new()).await;
    let (status, headers, body) = get(&engine.http, "/demo/orders/ab1234").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        headers.contains("content-type: application/json"),
        "{headers}"
    );
    let order: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(order["order_id"], "AB1234");
    assert_eq!(order["status"], "out for delivery");

    let (status, _, body) = get(&engine.http, "/demo/orders/ZZ0000").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, r#"{"error":"no such order"}"#);
    assert_eq!(http_get(&engine.http, "/nowhere").await.0, 404);
}

#[tokio::test]
async fn metrics_beyond_loopback_need_the_operator_key() {
    let engine = start(HashMap::from([("HTTP_HOST", "0.0.0.0".to_owned())])).await;

    let (status, headers, body) = get(&engine.http, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert!(headers.contains("www-authenticate: bearer"), "{headers}");
    assert!(body.contains("MCP_ADMIN_KEY"), "{body}");
    assert!(!body.contains("mcp_"), "no series leak: {body}");
    let (status, _, _) =
        get_with(&engine.http, "/metrics", "Authorization: Bearer wrong\r\n").await;
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");

    let bearer = format!("Authorization: Bearer {OPERATOR_KEY}\r\n");
    let (status, _, text) = get_with(&engine.http, "/metrics", &bearer).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(text.contains("\nmcp_uptime_seconds "), "{text}");
    // Probes stay open.
    assert_eq!(
        http_get(&engine.http, "/healthz").await,
        (200, "ok\n".to_owned())
    );
}
