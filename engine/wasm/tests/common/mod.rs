//! A host shared by the tests of one binary, the built plugins, a sample
//! conversation, and an HTTP API on 127.0.0.1 for the tool plugins.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use mcp_flow::{Conversation, Flow, PluginWorld};
use mcp_wasm::egress::Resolution;
use mcp_wasm::{AllowList, DirArtifactStore, Egress, HostConfig, Installed, PluginHost, Resolve};
use serde_json::json;

/// One host per test binary: compiled plugins are shared, and compiled
/// code persists in target/ for the next run. Tests use their own tenants.
pub static HOST: LazyLock<PluginHost> = LazyLock::new(|| {
    let cache = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/plugin-cache");
    PluginHost::new(HostConfig {
        artifacts: Some(Arc::new(DirArtifactStore::new(cache))),
        egress: Egress {
            resolver: Arc::new(TestNames),
            ..Egress::default()
        },
        ..HostConfig::default()
    })
    .expect("the host starts")
});

/// The names the tests resolve, so none depends on DNS: each points where
/// an attacker would point a name of their own.
pub struct TestNames;

impl TestNames {
    pub const TABLE: [(&str, &str); 3] = [
        ("loopback.test", "127.0.0.1"),
        ("metadata.test", "169.254.169.254"),
        ("mapped.test", "::ffff:127.0.0.1"),
    ];
}

impl Resolve for TestNames {
    fn resolve(&self, host: &str) -> Resolution {
        let found = TestNames::TABLE
            .iter()
            .find(|(name, _)| *name == host)
            .map(|(_, address)| vec![address.parse::<IpAddr>().unwrap()]);
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown name"))
        })
    }
}

/// An allow-list that opens the test API's loopback port, and only it.
pub fn allow_api(api: SocketAddr) -> AllowList {
    AllowList::parse(&[format!("127.0.0.1/32:{}", api.port())]).unwrap()
}

pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The Python build of vip_check; CI requires it (MCP_REQUIRE_PYTHON_PLUGINS=1).
pub fn python_vip_check() -> Option<Vec<u8>> {
    mcp_example_plugins::PYTHON_VIP_CHECK.map(bytes)
}

pub async fn install(tenant: &str, name: &str, path: &str, world: PluginWorld) -> Arc<Installed> {
    install_with(tenant, name, &bytes(path), world, BTreeMap::new()).await
}

pub async fn install_with(
    tenant: &str,
    name: &str,
    bytes: &[u8],
    world: PluginWorld,
    config: BTreeMap<String, String>,
) -> Arc<Installed> {
    HOST.install(tenant, name, "1.0.0", bytes, Some(world), config)
        .await
        .unwrap_or_else(|e| panic!("installing {name}: {e}"))
}

/// A conversation of `tenant` with a profile and some slots.
pub fn conversation(tenant: &str) -> Conversation {
    let flow = Flow::from_json(
        r#"{"flow_id":"f","name":"f","version":"1","initial_state":"end",
            "states":{"end":{"type":"end"}}}"#,
    )
    .unwrap();
    let mut c = Conversation::new(tenant, "conv-1", "user-1", &flow, 0);
    c.slots.insert("size".into(), json!("large"));
    c.slots.insert("quantity".into(), json!(2));
    c
}

/// An order API: `GET /orders/{id}` answers the order, or 404.
pub async fn order_api() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let (status, body) = match path.as_str() {
                        "/orders/AB1234" => (
                            200,
                            json!({ "status": "out for delivery", "eta_minutes": 15 }),
                        ),
                        "/orders/CD5678" => {
                            (200, json!({ "status": "delivered", "eta_minutes": null }))
                        }
                        _ => (404, json!({ "error": "no such order" })),
                    };
                    let response = Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                        .unwrap();
                    Ok::<_, Infallible>(response)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    addr
}
