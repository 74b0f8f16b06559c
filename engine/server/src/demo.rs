//! `mcp-engine serve --demo`: a tenant ready to talk to, so a newcomer sees
//! every part of the engine at work in their first minutes.
//!
//! Pizza Planet's assistant (examples/demo/pizza_planet.json) routes by
//! intent with a WASM classifier, takes an order with validated slots,
//! checks for a VIP with a WASM condition and prices the order with a WASM
//! action, tracks orders through a WASM integration that calls the order API
//! this process serves on its HTTP port (`/demo/orders/{id}`), plays trivia
//! in a tenant state type, and greets in two styles split by an A/B
//! experiment. Installing it again is harmless: plugins, the flow and the
//! experiment that exist are kept; the allow-list is set to this process's
//! HTTP port; and a new key is made (the old ones stay valid until revoked).
//!
//! The tenant's plugins are compiled into the binary, so installing it needs
//! the `demo` cargo feature (on by default); the order API does not.

use serde_json::json;

pub const TENANT: &str = "demo";
#[cfg(feature = "demo")]
pub const FLOW: &str = include_str!("../../../examples/demo/pizza_planet.json");
#[cfg(feature = "demo")]
const FLOW_ID: &str = "pizza_planet";
#[cfg(feature = "demo")]
const EXPERIMENT: &str = "greeting-style";

/// Keywords the intent classifier scores messages by.
#[cfg(feature = "demo")]
const INTENTS: &str = r#"{
    "order_pizza": ["order", "pizza", "hungry", "buy", "menu"],
    "order_status": ["where", "status", "track", "late", "my order"],
    "trivia": ["trivia", "quiz", "game", "play"]
}"#;

/// The orders the demo order API knows.
const ORDERS: [(&str, &str, u32); 2] = [
    ("AB1234", "out for delivery", 12),
    ("CD5678", "in the oven", 25),
];

/// The demo order API's answer for `path`, if it is one of its paths:
/// `/demo/orders/{id}` gives the order as JSON, or 404.
pub fn order_api(path: &str) -> Option<(u16, String)> {
    let id = path.strip_prefix("/demo/orders/")?;
    Some(
        match ORDERS
            .iter()
            .find(|(known, _, _)| known.eq_ignore_ascii_case(id))
        {
            Some((id, status, eta)) => (
                200,
                json!({ "order_id": id, "status": status, "eta_minutes": eta }).to_string(),
            ),
            None => (404, json!({ "error": "no such order" }).to_string()),
        },
    )
}

/// Creates (or completes) the demo tenant; `http_port` is where this process
/// serves the order API. Returns a new API key for it.
#[cfg(feature = "demo")]
pub async fn install(
    plugins: &mcp_registry::PluginRegistry,
    http_port: u16,
) -> Result<String, mcp_registry::RegistryError> {
    use std::collections::BTreeMap;

    use chrono::Utc;
    use mcp_example_plugins as built;
    use mcp_flow::ExperimentConfig;
    use mcp_registry::UploadPlugin;
    use mcp_store::{PolicySettings, PublishOptions, Scope, StoreError};

    let store = plugins.store();
    let api_host = format!("127.0.0.1:{http_port}");
    // A loopback address is refused by the egress policy unless a range
    // entry opens it: this one opens the demo's port, no other.
    let policy = PolicySettings {
        allow_list: vec![format!("127.0.0.1/32:{http_port}")],
        ..Default::default()
    };
    match store.tenant(TENANT).await {
        Ok(_) => plugins.set_tenant_policy(TENANT, policy).await?,
        Err(StoreError::NotFound { .. }) => {
            plugins
                .create_tenant(Some(TENANT), "Pizza Planet (demo)", policy)
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    let config = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    // The order API's address is part of the plugin's config, which a
    // version never changes: another port is another version.
    let order_api_version = format!("1.0.0+port{http_port}");
    let uploads = [
        (
            "menu-intents",
            "1.0.0",
            built::KEYWORD_INTENTS_BYTES,
            config(&[("intents", INTENTS.to_owned())]),
        ),
        ("vip-check", "1.0.0", built::VIP_CHECK_BYTES, config(&[])),
        ("price", "1.0.0", built::PRICE_BYTES, config(&[])),
        (
            "order-api",
            order_api_version.as_str(),
            built::ORDER_API_BYTES,
            config(&[("base_url", format!("http://{api_host}/demo"))]),
        ),
        ("trivia", "1.0.0", built::QUIZ_BYTES, config(&[])),
    ];
    for (name, version, bytes, config) in uploads {
        match store.plugin_version(TENANT, name, version).await {
            Ok(_) => continue,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        plugins
            .upload_plugin(
                TENANT,
                UploadPlugin {
                    name: name.into(),
                    version: version.into(),
                    bytes: bytes.to_vec(),
                    world: None,
                    config,
                },
            )
            .await?;
    }

    let version = serde_json::from_str::<serde_json::Value>(FLOW)
        .ok()
        .and_then(|flow| flow["version"].as_str().map(str::to_owned))
        .unwrap_or_default();
    match store.flow_version(TENANT, FLOW_ID, &version).await {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            store
                .publish_flow(
                    TENANT,
                    FLOW,
                    PublishOptions {
                        make_default: true,
                        ..Default::default()
                    },
                )
                .await?;
        }
        Err(e) => return Err(e.into()),
    }

    let experiments = store.list_experiments(TENANT).await?;
    if !experiments
        .iter()
        .any(|e| e.config.experiment_id == EXPERIMENT)
    {
        let config: ExperimentConfig = serde_json::from_value(json!({
            "experiment_id": EXPERIMENT,
            "name": "Friendly or brief greeting",
            "start_date": Utc::now(),
            "variants": [
                { "name": "friendly", "percentage": 50 },
                { "name": "brief", "percentage": 50 }
            ],
            "metrics": ["order_placed"]
        }))
        .expect("a valid experiment");
        store.create_experiment(TENANT, config).await?;
    }

    let key = store
        .create_api_key(TENANT, "demo", &[Scope::Admin])
        .await?;
    Ok(key.token)
}
