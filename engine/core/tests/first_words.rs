//! The message that moves a conversation on is handed on: a greeting does
//! not swallow the request it came with, and the message that routed into
//! a form fills what it can of it.

mod common;

use common::{Chat, FakePlugins, ManualClock, flow, texts};
use serde_json::{Value, json};

fn shop() -> Value {
    json!({
        "flow_id": "shop",
        "name": "Shop",
        "version": "1.0.0",
        "initial_state": "welcome",
        "intents": {
            "order": { "patterns": ["\\bpizzas?\\b"] },
            "track": { "patterns": ["\\b(track|where)\\b"] }
        },
        "states": {
            "welcome": {
                "type": "response",
                "config": { "response_templates": { "default": "Welcome! Order or track?" } },
                "transitions": [ { "condition": "any_input", "target_state": "route" } ]
            },
            "route": {
                "type": "intent",
                "config": { "intent_patterns": ["order", "track"], "confidence_threshold": 0.5 },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "order", "target_state": "collect" },
                    { "condition": "intent_match", "condition_value": "track", "target_state": "ask_order_id" },
                    { "condition": "low_confidence", "target_state": "clarify" }
                ]
            },
            "clarify": {
                "type": "response",
                "config": { "response_templates": { "default": "Sorry? You can order or track." } },
                "transitions": [ { "condition": "default", "target_state": "route" } ]
            },
            "collect": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["size", "topping"],
                    "validation_rules": {
                        "size": "one_of:small,medium,large",
                        "topping": "one_of:margherita,pepperoni"
                    },
                    "prompts": { "size": "Which size?", "topping": "Which topping?" }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "ordered" } ]
            },
            "ordered": {
                "type": "end",
                "config": { "message": "Ordered: {{ slots.size }} {{ slots.topping }}." }
            },
            "ask_order_id": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["order_id"],
                    "validation_rules": { "order_id": "regex:\\b([A-Z]{2}[0-9]{4})\\b" },
                    "prompts": { "order_id": "Your order number?" }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "tracked" } ]
            },
            "tracked": {
                "type": "end",
                "config": { "message": "Tracking {{ slots.order_id }}." }
            }
        }
    })
}

#[test]
fn a_first_message_is_greeted_and_routed_in_the_same_turn() {
    let flow = flow(shop());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("I'd like to order a large pizza");
    assert_eq!(
        texts(&first),
        ["Welcome! Order or track?", "Which topping?"]
    );
    assert_eq!(first.visited, ["welcome", "route", "collect"]);
    assert_eq!(
        first.intent.as_ref().and_then(|i| i.name.as_deref()),
        Some("order")
    );
    // The size came with the request; nothing in it answers the topping.
    assert_eq!(chat.conversation.slots.get("size"), Some(&json!("large")));
    assert_eq!(chat.conversation.slots.get("topping"), None);

    let done = chat.send("pepperoni");
    assert_eq!(texts(&done), ["Ordered: large pepperoni."]);
}

#[test]
fn a_request_that_carries_its_answer_needs_no_question() {
    let flow = flow(shop());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("where is my order AB1234?");
    assert_eq!(
        texts(&first),
        ["Welcome! Order or track?", "Tracking AB1234."]
    );
    assert_eq!(
        first.visited,
        ["welcome", "route", "ask_order_id", "tracked"]
    );
    assert!(first.ended);
}

#[test]
fn an_unclear_first_message_gets_the_greeting_alone() {
    let flow = flow(shop());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    // The greeting asked what the user wants; "Sorry?" on top would be noise.
    let first = chat.send("hello");
    assert_eq!(texts(&first), ["Welcome! Order or track?"]);
    assert_eq!(first.visited, ["welcome", "route"]);
    assert_eq!(first.state, "route");

    // The intent state now waits as usual, and hands its message on too.
    let second = chat.send("track AB1234 please");
    assert_eq!(texts(&second), ["Tracking AB1234."]);
}

#[test]
fn a_greeting_said_in_an_earlier_turn_lets_the_flow_clarify() {
    let flow = flow(shop());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    // Entered without a message (as a flow moved here by trigger_flow is),
    // the greeting speaks and waits.
    let entered = futures::executor::block_on(chat.machine.enter(&flow, &mut chat.conversation));
    assert_eq!(texts(&entered), ["Welcome! Order or track?"]);
    assert_eq!(entered.state, "welcome");

    let unclear = chat.send("hello");
    assert_eq!(texts(&unclear), ["Sorry? You can order or track."]);
    assert_eq!(unclear.visited, ["route", "clarify", "route"]);
}

#[test]
fn a_greeting_that_waits_for_input_keeps_the_old_rule() {
    let mut definition = shop();
    definition["states"]["welcome"]["config"]["wait_for_input"] = json!(true);
    let flow = flow(definition);
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("I'd like to order a large pizza");
    assert_eq!(texts(&first), ["Welcome! Order or track?"]);
    assert_eq!(first.visited, ["welcome", "route"]);
    assert!(first.intent.is_none(), "nothing classified the message");
    assert!(chat.conversation.slots.is_empty());
}

#[test]
fn only_a_state_that_took_the_message_hands_it_on() {
    let flow = flow(shop());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hello");

    // "clarify" was entered by a transition, not handed the message: its
    // default transition back to "route" leaves route waiting, so the
    // unclear message is not classified twice in one turn.
    let unclear = chat.send("what's the weather?");
    assert_eq!(texts(&unclear), ["Sorry? You can order or track."]);
    assert_eq!(unclear.visited, ["clarify", "route"]);
    assert_eq!(unclear.state, "route");
}

#[test]
fn a_classifiers_entities_fill_the_slots_of_the_same_name() {
    let flow = flow(json!({
        "flow_id": "refunds",
        "name": "Refunds",
        "version": "1.0.0",
        "initial_state": "triage",
        "states": {
            "triage": {
                "type": "intent",
                "config": { "classifier": "triage", "confidence_threshold": 0.5 },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "refund", "target_state": "refund_form" }
                ]
            },
            "refund_form": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["order_number", "amount"],
                    "validation_rules": { "order_number": "integer:1..999" },
                    "prompts": {
                        "order_number": "Which order?",
                        "amount": "How much for order {{ intent.entities.order_number }}?"
                    }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "done" } ]
            },
            "done": { "type": "end" }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("a refund for order 42 please, £30");
    assert_eq!(texts(&first), ["How much for order 42?"]);
    // The order number passed its rule (a number now); the amount's
    // confidence (0.2) is under the state's threshold.
    assert_eq!(
        chat.conversation.slots.get("order_number"),
        Some(&json!(42))
    );
    assert_eq!(chat.conversation.slots.get("amount"), None);
    let entities = &first.intent.as_ref().unwrap().entities;
    assert_eq!(entities.get("order_number"), Some(&json!("42")));
    assert!(!entities.contains_key("amount"));
}

#[test]
fn named_groups_of_intent_patterns_are_entities() {
    let mut definition = shop();
    definition["intents"]["track"]["patterns"] = json!([
        "\\b(track|where)\\b.*?(?P<order_id>[A-Z]{2}[0-9]{4})",
        "\\b(track|where)\\b"
    ]);
    // No rule that could find the number on its own: the entity fills it.
    definition["states"]["ask_order_id"]["config"]["validation_rules"] = json!({});
    let flow = flow(definition);
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("where is AB1234?");
    assert_eq!(texts(&first).last(), Some(&"Tracking AB1234."));
}
