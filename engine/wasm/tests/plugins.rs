//! Every example plugin through the host, in Rust and in Python.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{HOST, bytes, conversation, install, install_with, order_api, python_vip_check};
use mcp_example_plugins as built;
use mcp_flow::{Event, PluginCall, PluginError, PluginRuntime, PluginWorld};
use mcp_wasm::{Manifest, TenantPolicy};
use serde_json::{Value, json};

fn call<'a>(
    conversation: &'a mcp_flow::Conversation,
    plugin: &'a str,
    args: &'a Value,
    event: Option<&'a Event>,
) -> PluginCall<'a> {
    PluginCall {
        tenant_id: &conversation.tenant_id,
        plugin,
        version: None,
        args,
        conversation,
        event,
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rust_condition_checks_the_profile_and_the_args() {
    install(
        "t-cond",
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
    let mut c = conversation("t-cond");
    let args = json!({ "min_spent": 500 });
    assert!(
        !HOST
            .evaluate_condition(call(&c, "vip-check", &args, None))
            .await
            .unwrap()
    );
    c.user_profile.insert("spent".into(), json!(650));
    assert!(
        HOST.evaluate_condition(call(&c, "vip-check", &args, None))
            .await
            .unwrap()
    );
    c.user_profile.insert("spent".into(), json!(0));
    c.user_profile.insert("vip".into(), json!(true));
    assert!(
        HOST.evaluate_condition(call(&c, "vip-check", &args, None))
            .await
            .unwrap()
    );

    // Bad args are the plugin's own error, returned as a value.
    let bad = json!({ "min_spent": "lots" });
    let err = HOST
        .evaluate_condition(call(&c, "vip-check", &bad, None))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::Failed {
            plugin: "vip-check".into(),
            message: "bad-args: min_spent must be a number".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_condition_agrees_with_the_rust_one() {
    let Some(python) = python_vip_check() else {
        eprintln!("componentize-py is not installed; the Python plugin was not built");
        return;
    };
    install_with(
        "t-py",
        "vip-check-py",
        &python,
        PluginWorld::Condition,
        BTreeMap::new(),
    )
    .await;
    install(
        "t-py",
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
    let mut c = conversation("t-py");
    for (profile, args) in [
        (json!({}), json!({})),
        (json!({ "spent": 120 }), json!({})),
        (json!({ "spent": 120 }), json!({ "min_spent": 500 })),
        (json!({ "vip": true }), json!({ "min_spent": 500 })),
    ] {
        c.user_profile = profile.as_object().unwrap().clone();
        let rust = HOST
            .evaluate_condition(call(&c, "vip-check", &args, None))
            .await
            .unwrap();
        let python = HOST
            .evaluate_condition(call(&c, "vip-check-py", &args, None))
            .await
            .unwrap();
        assert_eq!(rust, python, "profile {profile}, args {args}");
    }
    let bad = json!({ "min_spent": "lots" });
    let err = HOST
        .evaluate_condition(call(&c, "vip-check-py", &bad, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PluginError::Failed { message, .. } if message.starts_with("bad-args")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_action_prices_the_order_into_variables() {
    install("t-action", "price", built::PRICE, PluginWorld::Action).await;
    let c = conversation("t-action");
    let args = json!({ "discount": 0.1 });
    let output = HOST
        .run_action(call(&c, "price", &args, None))
        .await
        .unwrap();
    assert_eq!(output.updates["total"], json!(22.5));
    assert_eq!(output.messages, ["That comes to $22.50."]);

    let mut empty = conversation("t-action");
    empty.slots.clear();
    let err = HOST
        .run_action(call(&empty, "price", &args, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the size slot is not filled"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tool_calls_the_tenants_api_over_http() {
    let api = order_api().await;
    HOST.set_policy(
        "t-tool",
        TenantPolicy {
            allow_list: common::allow_api(api),
            ..Default::default()
        },
    );
    let config = BTreeMap::from([("base_url".to_owned(), format!("http://{api}"))]);
    let installed = install_with(
        "t-tool",
        "order-api",
        &bytes(built::ORDER_API),
        PluginWorld::Tool,
        config,
    )
    .await;
    let Some(Manifest::Tool(manifest)) = &installed.manifest else {
        panic!("a tool has a manifest")
    };
    assert_eq!(manifest.name, "order-api");
    assert_eq!(manifest.input_schema["required"], json!(["order_id"]));
    assert_eq!(manifest.permissions, ["network"]);
    assert_eq!(HOST.tools("t-tool")[0].name, "order-api");
    assert!(HOST.tools("someone-else").is_empty());

    let c = conversation("t-tool");
    let found = HOST
        .call_tool(call(
            &c,
            "order-api",
            &json!({ "order_id": "AB1234" }),
            None,
        ))
        .await
        .unwrap();
    assert_eq!(
        found,
        json!({ "status": "out for delivery", "eta_minutes": 15 })
    );
    let missing = HOST
        .call_tool(call(
            &c,
            "order-api",
            &json!({ "order_id": "ZZ0000" }),
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "plugin order-api failed: not-found: order ZZ0000 not found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_state_type_asks_then_checks_answers() {
    let installed = install("t-state", "quiz", built::QUIZ, PluginWorld::StateType).await;
    let Some(Manifest::StateType(manifest)) = &installed.manifest else {
        panic!("a state type has a manifest")
    };
    assert_eq!(
        manifest.config_schema["required"],
        json!(["question", "answer"])
    );

    let mut c = conversation("t-state");
    let config = json!({ "question": "2 + 2?", "answer": "4", "max_attempts": 2 });
    let entered = HOST
        .execute_state(call(&c, "quiz", &config, None))
        .await
        .unwrap();
    assert_eq!(entered.messages, ["2 + 2?"]);
    assert!(entered.wait_for_input);

    let wrong = Event::message("5");
    let first = HOST
        .execute_state(call(&c, "quiz", &config, Some(&wrong)))
        .await
        .unwrap();
    assert_eq!(first.messages, ["Not quite, try again."]);
    assert!(first.wait_for_input);
    c.variables.extend(first.updates);
    let second = HOST
        .execute_state(call(&c, "quiz", &config, Some(&wrong)))
        .await
        .unwrap();
    assert_eq!(second.outcome.as_deref(), Some("failed"));
    assert!(!second.wait_for_input);

    let right = Event::message(" 4 ");
    let fresh = conversation("t-state");
    let won = HOST
        .execute_state(call(&fresh, "quiz", &config, Some(&right)))
        .await
        .unwrap();
    assert_eq!(won.outcome.as_deref(), Some("correct"));
    assert_eq!(won.updates["quiz_score"], json!(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_intent_classifier_uses_the_tenants_config() {
    install(
        "t-intent",
        "keywords",
        built::KEYWORD_INTENTS,
        PluginWorld::Intent,
    )
    .await;
    let c = conversation("t-intent");
    let text = Event::message("I want a refund, this was terrible");
    let found = HOST
        .classify_intent(call(&c, "keywords", &Value::Null, Some(&text)))
        .await
        .unwrap();
    let mut names: Vec<&str> = found.intents.iter().map(|s| s.intent.as_str()).collect();
    names.sort();
    assert_eq!(names, ["complaint", "refund"]);
    assert!(found.entities.is_empty(), "{:?}", found.entities);

    let config = BTreeMap::from([
        (
            "intents".to_owned(),
            r#"{"pizza": ["pizza", "pepperoni"]}"#.to_owned(),
        ),
        (
            "entities".to_owned(),
            r#"{"size": ["small", "large"], "topping": ["pepperoni", "veggie"]}"#.to_owned(),
        ),
    ]);
    install_with(
        "t-intent2",
        "keywords",
        &bytes(built::KEYWORD_INTENTS),
        PluginWorld::Intent,
        config,
    )
    .await;
    let c = conversation("t-intent2");
    let text = Event::message("a pepperoni pizza please");
    let found = HOST
        .classify_intent(call(&c, "keywords", &Value::Null, Some(&text)))
        .await
        .unwrap();
    assert_eq!(found.intents.len(), 1);
    assert_eq!(found.intents[0].intent, "pizza");
    assert!((found.intents[0].confidence - 0.95).abs() < 1e-9);
    // The classifier exports intent-entities: the host asked for them too.
    let entities: Vec<(&str, &Value)> = found
        .entities
        .iter()
        .map(|e| (e.name.as_str(), &e.value))
        .collect();
    assert_eq!(entities, [("topping", &json!("pepperoni"))]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_never_resolves_another_tenants_plugin() {
    install("t-owner", "secret-price", built::PRICE, PluginWorld::Action).await;
    let c = conversation("t-stranger");
    let err = HOST
        .run_action(call(&c, "secret-price", &Value::Null, None))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        PluginError::NotFound {
            plugin: "secret-price".into()
        }
    );
    let owner = conversation("t-owner");
    assert!(
        HOST.run_action(call(&owner, "secret-price", &Value::Null, None))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_of_another_world_is_refused() {
    install(
        "t-world",
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
    let c = conversation("t-world");
    let err = HOST
        .run_action(call(&c, "vip-check", &Value::Null, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("it serves the condition world, not the action world"),
        "{err}"
    );
}
