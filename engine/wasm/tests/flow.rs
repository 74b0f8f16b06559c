//! The engine core drives a flow whose condition, action, integration,
//! intent classifier and custom state are all real WebAssembly plugins.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use common::{HOST, bytes, install, install_with, order_api};
use mcp_example_plugins as built;
use mcp_flow::{Clock, Conversation, Event, Flow, Machine, PluginWorld};
use mcp_wasm::TenantPolicy;
use serde_json::json;

/// Time from the tokio runtime.
struct TokioClock;

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

fn support_flow() -> Flow {
    Flow::from_value(json!({
        "flow_id": "support", "name": "Support", "version": "1", "initial_state": "triage",
        "recovery_state": "sorry",
        "states": {
            "triage": {
                "type": "intent",
                "config": { "classifier": "keywords", "confidence_threshold": 0.7 },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "refund", "target_state": "check_vip", "priority": 1 },
                    { "condition": "intent_match", "condition_value": "order_status", "target_state": "lookup", "priority": 2 },
                    { "condition": "low_confidence", "target_state": "quiz", "priority": 3 }
                ]
            },
            "check_vip": {
                "type": "condition",
                "transitions": [
                    { "condition": "plugin", "plugin": "vip-check", "args": { "min_spent": 500 }, "target_state": "vip_refund", "priority": 1 },
                    { "condition": "default", "target_state": "lookup" }
                ]
            },
            "vip_refund": {
                "type": "end",
                "entry_actions": [ { "type": "plugin", "plugin": "price", "args": { "discount": 0.5 } } ],
                "config": { "message": "Refund of ${{ variables.total }} approved." }
            },
            "lookup": {
                "type": "integration",
                "config": {
                    "integration_id": "order-api",
                    "request_mapping": { "order_id": "variables.order_id" },
                    "response_mapping": { "order_status": "result.status" },
                    "timeout_ms": 5000
                },
                "transitions": [
                    { "condition": "integration_success", "target_state": "status", "priority": 1 },
                    { "condition": "integration_error", "target_state": "sorry", "priority": 2 }
                ]
            },
            "status": {
                "type": "end",
                "config": { "message": "Your order is {{ variables.order_status }}." }
            },
            "quiz": {
                "type": "plugin:quiz",
                "config": { "question": "Let's check you're human: 2 + 2?", "answer": "4" },
                "transitions": [
                    { "condition": "expression", "expression": "state.outcome == 'correct'", "target_state": "triage_again", "priority": 1 },
                    { "condition": "default", "target_state": "sorry" }
                ]
            },
            "triage_again": {
                "type": "response",
                "config": { "response_templates": { "default": "Thanks! What can I do for you?" } },
                "transitions": [ { "condition": "default", "target_state": "triage" } ]
            },
            "sorry": { "type": "end", "config": { "message": "Sorry, I can't help with that." } }
        }
    }))
    .unwrap_or_else(|report| panic!("{report}"))
}

async fn tenant_with_plugins(tenant: &str) {
    let api = order_api().await;
    HOST.set_policy(
        tenant,
        TenantPolicy {
            allow_list: common::allow_api(api),
            ..Default::default()
        },
    );
    install(
        tenant,
        "keywords",
        built::KEYWORD_INTENTS,
        PluginWorld::Intent,
    )
    .await;
    install(
        tenant,
        "vip-check",
        built::VIP_CHECK,
        PluginWorld::Condition,
    )
    .await;
    install(tenant, "price", built::PRICE, PluginWorld::Action).await;
    install(tenant, "quiz", built::QUIZ, PluginWorld::StateType).await;
    let config = BTreeMap::from([("base_url".to_owned(), format!("http://{api}"))]);
    install_with(
        tenant,
        "order-api",
        &bytes(built::ORDER_API),
        PluginWorld::Tool,
        config,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flow_made_of_plugins_runs_end_to_end() {
    tenant_with_plugins("t-flow").await;
    let flow = support_flow();
    let machine = Machine::new(HOST.clone(), TokioClock);
    let names: Vec<(PluginWorld, String)> = flow.required_plugins().into_iter().collect();
    for (world, name) in &names {
        assert_eq!(
            HOST.resolve("t-flow", name).unwrap().world,
            *world,
            "{name}"
        );
    }

    // A VIP asking for a refund: intent → condition → action.
    let mut vip = Conversation::new("t-flow", "c-vip", "u", &flow, 0);
    vip.user_profile.insert("vip".into(), json!(true));
    vip.slots.insert("size".into(), json!("medium"));
    vip.slots.insert("quantity".into(), json!(3));
    let turn = machine
        .step(&flow, &mut vip, &Event::message("I want a refund"))
        .await;
    assert_eq!(turn.errors, []);
    assert_eq!(turn.visited, ["triage", "check_vip", "vip_refund"]);
    let texts: Vec<&str> = turn.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(
        texts,
        ["That comes to $15.00.", "Refund of $15.0 approved."]
    );
    assert_eq!(turn.plugin_calls, 3);

    // Not a VIP: the condition falls through to the tool, over HTTP.
    let mut regular = Conversation::new("t-flow", "c-reg", "u", &flow, 0);
    regular.variables.insert("order_id".into(), json!("AB1234"));
    let turn = machine
        .step(
            &flow,
            &mut regular,
            &Event::message("where is my order? it's late"),
        )
        .await;
    assert_eq!(turn.errors, []);
    assert_eq!(turn.visited, ["triage", "lookup", "status"]);
    assert_eq!(turn.messages[0].text, "Your order is out for delivery.");

    // An unknown order: the tool's error takes the error branch.
    let mut unknown = Conversation::new("t-flow", "c-unk", "u", &flow, 0);
    unknown.variables.insert("order_id".into(), json!("ZZ0000"));
    let turn = machine
        .step(&flow, &mut unknown, &Event::message("order status please"))
        .await;
    assert_eq!(turn.state, "sorry");
    assert!(
        turn.errors[0].message.contains("order ZZ0000 not found"),
        "{:?}",
        turn.errors
    );

    // Low confidence: the tenant's quiz state holds the conversation.
    let mut unsure = Conversation::new("t-flow", "c-quiz", "u", &flow, 0);
    let turn = machine
        .step(&flow, &mut unsure, &Event::message("hmm"))
        .await;
    assert_eq!(turn.messages[0].text, "Let's check you're human: 2 + 2?");
    assert_eq!(turn.state, "quiz");
    let turn = machine.step(&flow, &mut unsure, &Event::message("4")).await;
    let texts: Vec<&str> = turn.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["Correct!", "Thanks! What can I do for you?"]);
    assert_eq!(turn.state, "triage");
    assert_eq!(unsure.variables["quiz_score"], json!(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_plugin_is_an_ordinary_turn_error() {
    let flow = support_flow();
    let machine = Machine::new(HOST.clone(), TokioClock);
    let mut c = Conversation::new("t-empty", "c", "u", &flow, 0);
    let turn = machine.step(&flow, &mut c, &Event::message("refund")).await;
    // No classifier installed: the intent is unknown, so low confidence → quiz,
    // whose plugin is missing too → the recovery state.
    assert_eq!(turn.state, "sorry");
    assert!(
        turn.errors
            .iter()
            .any(|e| e.message.contains("plugin keywords is not installed")),
        "{:?}",
        turn.errors
    );
}
