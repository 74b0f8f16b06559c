//! A tool plugin tries to reach the engine's own network: through a name
//! on its tenant's list that resolves inside, through IP literals in every
//! spelling. The egress policy refuses each with the reason the plugin
//! sees, counts it, and another tenant's calls are answered meanwhile.

mod common;

use std::time::Duration;

use common::{HOST, conversation, install, order_api};
use mcp_example_plugins as built;
use mcp_flow::{PluginCall, PluginError, PluginRuntime, PluginWorld};
use mcp_wasm::{AllowList, TenantPolicy};
use serde_json::{Value, json};

/// Installs the hostile tool for `tenant` with `allow_list` as its list.
async fn attacker(tenant: &str, allow_list: &[String]) {
    HOST.set_policy(
        tenant,
        TenantPolicy {
            allow_list: AllowList::parse(allow_list).unwrap(),
            ..Default::default()
        },
    );
    install(tenant, "hostile", built::HOSTILE, PluginWorld::Tool).await;
}

async fn fetch(tenant: &str, authority: &str) -> Result<Value, PluginError> {
    let args = json!({ "mode": "http", "authority": authority });
    HOST.call_tool(PluginCall {
        tenant_id: tenant,
        plugin: "hostile",
        version: None,
        args: &args,
        conversation: &conversation(tenant),
        event: None,
        timeout: Duration::from_secs(5),
    })
    .await
}

/// A bystander tenant's healthy condition, answered during an attack.
async fn bystander_answers() -> bool {
    install(
        "t-bystander",
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
    let mut c = conversation("t-bystander");
    c.user_profile.insert("vip".into(), json!(true));
    HOST.evaluate_condition(PluginCall {
        tenant_id: "t-bystander",
        plugin: "vip-check",
        version: None,
        args: &json!({}),
        conversation: &c,
        event: None,
        timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

/// The attack's authority, on the attacker's own list so that only the
/// egress policy stands in the way; the refusal the plugin must see.
async fn refused(tenant: &str, authority: &str, reason: &str) {
    attacker(tenant, &[authority.to_owned()]).await;
    let denials_before = denials(reason);
    let (attack, answered) = tokio::join!(fetch(tenant, authority), bystander_answers());
    match attack {
        Err(PluginError::Failed { message, .. }) => assert!(
            message.contains("egress denied") && message.contains(reason),
            "{authority}: {message}"
        ),
        other => panic!("{authority}: expected an egress denial, got {other:?}"),
    }
    assert!(answered, "the other tenant was answered during the attack");
    assert!(
        denials(reason) > denials_before,
        "{reason} denials are counted"
    );
}

fn denials(kind: &str) -> u64 {
    HOST.egress_counters()
        .denials()
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, n)| n)
        .sum()
}

/// Each attack listens for real, so a refusal is the policy's doing and
/// not a closed port: the API behind them answers when a range opens it.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_behind_the_attacks_answers_when_a_range_entry_opens_it() {
    let api = order_api().await;
    attacker("t-opened", &[format!("127.0.0.1/32:{}", api.port())]).await;
    assert_eq!(
        fetch("t-opened", &api.to_string()).await.unwrap(),
        json!(404)
    );
    // The range opens that port only.
    let other_port = format!("127.0.0.1:{}", api.port() + 1);
    let error = fetch("t-opened", &other_port).await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not on the tenant's outbound allow-list"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listed_name_that_resolves_to_loopback_is_refused() {
    let api = order_api().await;
    refused(
        "t-dns",
        &format!("loopback.test:{}", api.port()),
        "loopback",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_listed_name_that_resolves_to_the_metadata_address_is_refused() {
    refused("t-metadata", "metadata.test", "link-local").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_resolves_to_an_ipv4_mapped_loopback_is_refused() {
    let api = order_api().await;
    refused(
        "t-dns-mapped",
        &format!("mapped.test:{}", api.port()),
        "loopback",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ip_literal_to_loopback_is_refused() {
    let api = order_api().await;
    refused("t-literal", &api.to_string(), "loopback").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ipv4_mapped_ipv6_literal_is_refused() {
    let api = order_api().await;
    refused(
        "t-mapped",
        &format!("[::ffff:127.0.0.1]:{}", api.port()),
        "loopback",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn decimal_octal_and_hex_forms_of_loopback_are_refused() {
    let api = order_api().await;
    for (tenant, host) in [
        ("t-decimal", "2130706433"),
        ("t-octal", "0177.0.0.1"),
        ("t-hex", "0x7f.1"),
    ] {
        refused(tenant, &format!("{host}:{}", api.port()), "loopback").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_unspecified_address_is_refused() {
    let api = order_api().await;
    refused("t-zero", &format!("0.0.0.0:{}", api.port()), "unspecified").await;
}
