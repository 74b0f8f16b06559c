//! Repair inside forms: corrections, cancelling, and digressions that come
//! back to the interrupted question.

mod common;

use common::{Chat, FakePlugins, ManualClock, flow, texts};
use mcp_flow::validate;
use serde_json::{Value, json};

fn pizzeria() -> Value {
    json!({
        "flow_id": "pizzeria",
        "name": "Pizzeria",
        "version": "1.0.0",
        "initial_state": "route",
        "intents": { "order": { "patterns": ["\\border\\b"] } },
        "global_handlers": {
            "trivia": {
                "patterns": ["\\btrivia\\b"],
                "target_state": "quiz",
                "interrupts": true,
                "resume_message": "Back to your order:"
            }
        },
        "states": {
            "route": {
                "type": "intent",
                "config": { "confidence_threshold": 0.5, "prompt": "What would you like?" },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "order", "target_state": "collect" }
                ]
            },
            "collect": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["size", "topping", "quantity"],
                    "validation_rules": {
                        "size": "one_of:small,medium,large",
                        "topping": "one_of:margherita,pepperoni",
                        "quantity": "integer:1..10"
                    },
                    "prompts": {
                        "size": "Which size?",
                        "topping": "Which topping?",
                        "quantity": "How many {{ slots.size }} {{ slots.topping }} pizzas?"
                    },
                    "cancel": {
                        "phrases": ["cancel", "never mind"],
                        "response": "Okay, cancelled.",
                        "target_state": "route"
                    }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "confirm" } ]
            },
            "confirm": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["confirmed"],
                    "validation_rules": { "confirmed": "boolean" },
                    "prompts": {
                        "confirmed": "{{ slots.quantity }} × {{ slots.size }} {{ slots.topping }}, OK?"
                    },
                    "corrections": {
                        "slots": ["size", "topping"],
                        "response": "Changed that."
                    }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "placed" } ]
            },
            "placed": { "type": "end", "config": { "message": "Placed." } },
            "quiz": {
                "type": "wait",
                "config": { "prompt": "Which city is the Margherita from?" },
                "transitions": [ { "condition": "any_input", "target_state": "quiz_answer" } ]
            },
            "quiz_answer": {
                "type": "response",
                "config": { "response_templates": { "default": "It's Naples." } },
                "transitions": [ { "condition": "default", "target_state": "route", "resume": true } ]
            }
        }
    })
}

#[test]
fn a_new_value_for_a_filled_slot_corrects_it_and_asks_again() {
    let flow = flow(pizzeria());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("I'd like to order a large pepperoni");
    assert_eq!(texts(&first), ["How many large pepperoni pizzas?"]);

    let corrected = chat.send("actually make it medium");
    assert_eq!(texts(&corrected), ["How many medium pepperoni pizzas?"]);
    assert_eq!(corrected.actions[0].label(), "correction:size");
    assert_eq!(corrected.errors.len(), 0, "a correction is no wrong answer");
    assert_eq!(chat.conversation.slots["size"], json!("medium"));
}

#[test]
fn a_confirmation_takes_corrections_of_earlier_slots_and_confirms_again() {
    let flow = flow(pizzeria());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("order a large pepperoni");
    assert_eq!(texts(&chat.send("2")), ["2 × large pepperoni, OK?"]);

    let corrected = chat.send("hmm, margherita instead");
    assert_eq!(
        texts(&corrected),
        ["Changed that.", "2 × large margherita, OK?"]
    );
    assert_eq!(corrected.state, "confirm");
    assert!(!chat.conversation.slots.contains_key("confirmed"));
    assert_eq!(texts(&chat.send("yes")), ["Placed."]);
}

#[test]
fn cancelling_leaves_the_form_and_forgets_its_slots() {
    let flow = flow(pizzeria());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("order a large pizza");

    let cancelled = chat.send("never mind");
    assert_eq!(
        texts(&cancelled),
        ["Okay, cancelled.", "What would you like?"]
    );
    assert_eq!(cancelled.state, "route");
    assert!(chat.conversation.slots.is_empty());
}

#[test]
fn a_digression_comes_back_to_the_interrupted_question() {
    let flow = flow(pizzeria());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("order a large pepperoni");

    let quiz = chat.send("let's play trivia");
    assert_eq!(texts(&quiz), ["Which city is the Margherita from?"]);
    assert_eq!(quiz.state, "quiz");

    let back = chat.send("Rome");
    assert_eq!(
        texts(&back),
        [
            "It's Naples.",
            "Back to your order:",
            "How many large pepperoni pizzas?"
        ]
    );
    assert_eq!(back.state, "collect");
    // The form goes on where it was.
    assert_eq!(texts(&chat.send("2")), ["2 × large pepperoni, OK?"]);
}

#[test]
fn without_an_interruption_resume_takes_the_target() {
    let flow = flow(pizzeria());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    // From the intent state there is no question to come back to: the
    // digression is a plain route, and resume takes its target.
    chat.send("trivia!");
    assert!(chat.conversation.interrupted.is_empty());
    let back = chat.send("Naples");
    assert_eq!(texts(&back), ["It's Naples.", "What would you like?"]);
    assert_eq!(back.state, "route");
}

#[test]
fn the_validator_checks_repairs() {
    let mut definition = pizzeria();
    definition["states"]["quiz_answer"]["transitions"][0]["resume"] = json!(false);
    definition["states"]["collect"]["config"]["cancel"]["target_state"] = json!("gone");
    definition["states"]["collect"]["config"]["cancel"]["phrases"] = json!([]);
    definition["states"]["confirm"]["config"]["corrections"]["slots"] = json!(["colour"]);
    let report = validate(definition);
    let errors: Vec<(String, String)> = report
        .errors()
        .map(|i| (i.path.clone(), i.message.clone()))
        .collect();
    let has =
        |path: &str, needle: &str| errors.iter().any(|(p, m)| p == path && m.contains(needle));
    assert!(
        has(
            "global_handlers.trivia.target_state",
            "a digression without a way back"
        ),
        "{errors:#?}"
    );
    assert!(
        has(
            "states.collect.config.cancel",
            "needs phrases, patterns or an intent"
        ),
        "{errors:#?}"
    );
    assert!(
        has("states.collect.config.cancel.target_state", "\"gone\""),
        "{errors:#?}"
    );
    assert!(
        has("states.confirm.config.corrections.slots[0]", "\"colour\""),
        "{errors:#?}"
    );
}

#[test]
fn two_intents_too_close_to_call_are_clarified_with_quick_replies() {
    let flow = flow(json!({
        "flow_id": "desk",
        "name": "Desk",
        "version": "1.0.0",
        "initial_state": "route",
        "intents": {
            "order_pizza": { "patterns": ["\\border\\b"] },
            "track_order": { "patterns": ["\\border\\b", "\\btrack\\b"], "title": "Track an order" }
        },
        "states": {
            "route": {
                "type": "intent",
                "config": { "confidence_threshold": 0.5, "clarify_margin": 0.1 },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "order_pizza", "target_state": "ordering" },
                    { "condition": "intent_match", "condition_value": "track_order", "target_state": "tracking" }
                ]
            },
            "ordering": { "type": "end", "config": { "message": "Ordering." } },
            "tracking": { "type": "end", "config": { "message": "Tracking." } }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());

    let mut chat = Chat::new(&flow, &plugins, &clock);
    let asked = chat.send("my order");
    assert_eq!(texts(&asked), ["Which did you mean?"]);
    assert_eq!(asked.state, "route");
    let offered: Vec<(&str, Option<&str>)> = asked.messages[0]
        .rich
        .quick_replies
        .iter()
        .map(|q| (q.title.as_str(), q.payload.as_deref()))
        .collect();
    assert_eq!(
        offered,
        [
            ("Order pizza", Some("order_pizza")),
            ("Track an order", Some("track_order"))
        ]
    );
    // A tap (its payload) answers it; so does saying a title.
    let tapped = chat.event(
        mcp_flow::Event::message("Track an order").with_data("payload", json!("track_order")),
    );
    assert_eq!(texts(&tapped), ["Tracking."]);

    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("order?");
    assert_eq!(texts(&chat.send("order pizza")), ["Ordering."]);
}
