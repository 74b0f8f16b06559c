//! The machine's behaviour beyond the example flows: plugins at every
//! extension point, timeouts, error handling and the loop guard.

mod common;

use common::{Chat, FakePlugins, ManualClock, flow, texts};
use mcp_flow::{Event, Flow, TurnErrorKind};
use serde_json::json;

/// A support flow where every tenant-specific part is a plugin.
fn plugin_flow() -> Flow {
    flow(json!({
        "flow_id": "support", "name": "Support", "version": "2", "initial_state": "triage",
        "states": {
            "triage": {
                "type": "intent",
                "config": { "classifier": "nlu", "confidence_threshold": 0.8, "fallback_intent": "unknown" },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "refund", "target_state": "vip_check", "priority": 1 },
                    { "condition": "low_confidence", "target_state": "quiz", "priority": 2 }
                ]
            },
            "vip_check": {
                "type": "condition",
                "transitions": [
                    { "condition": "plugin", "plugin": "is-vip", "args": { "min_spent": 500 }, "target_state": "refund_vip", "priority": 1 },
                    { "condition": "default", "target_state": "lookup" }
                ]
            },
            "refund_vip": {
                "type": "response",
                "config": { "response_templates": { "default": "As a VIP your refund of ${{ variables.total }} is approved." } },
                "entry_actions": [ { "type": "plugin", "plugin": "price", "args": { "discount": 0.5 } } ],
                "transitions": [ { "condition": "default", "target_state": "end" } ]
            },
            "lookup": {
                "type": "integration",
                "config": {
                    "integration_id": "order-api",
                    "request_mapping": { "order_id": "'AB1234'" },
                    "response_mapping": { "slots.status": "result.status" }
                },
                "transitions": [
                    { "condition": "integration_success", "target_state": "status" },
                    { "condition": "integration_error", "target_state": "end" }
                ]
            },
            "status": {
                "type": "response",
                "config": { "response_templates": { "default": "Your order is {{ slots.status }}; refunds open once it arrives." } },
                "transitions": [ { "condition": "default", "target_state": "end" } ]
            },
            "quiz": {
                "type": "plugin:quiz",
                "config": { "question": "Quick check: what is 2 + 2?", "answer": "4" },
                "transitions": [
                    { "condition": "expression", "expression": "state.outcome == 'correct'", "target_state": "end" }
                ]
            },
            "end": { "type": "end", "config": { "message": "Thanks!" } }
        }
    }))
}

#[test]
fn a_flow_of_plugins_runs_condition_action_tool_intent_and_state_type() {
    let flow = plugin_flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());

    // VIP path: classifier → condition plugin → action plugin.
    let mut vip = Chat::new(&flow, &plugins, &clock);
    vip.conversation
        .user_profile
        .insert("vip".into(), json!(true));
    vip.conversation.slots.insert("quantity".into(), json!(2));
    let turn = vip.send("I want a refund");
    assert_eq!(
        turn.intent.as_ref().unwrap().name.as_deref(),
        Some("refund")
    );
    assert_eq!(
        texts(&turn),
        [
            "Price calculated.",
            "As a VIP your refund of $10.0 is approved.",
            "Thanks!"
        ]
    );
    assert_eq!(turn.plugin_calls, 3);
    assert_eq!(
        plugins.calls(),
        [
            "intent:tenant-a:nlu",
            "condition:tenant-a:is-vip",
            "action:tenant-a:price"
        ]
    );

    // Not a VIP: the condition fails over to the tool.
    let mut regular = Chat::new(&flow, &plugins, &clock);
    regular
        .conversation
        .user_profile
        .insert("spent".into(), json!(120));
    let turn = regular.send("refund please");
    assert_eq!(
        texts(&turn),
        [
            "Your order is out for delivery; refunds open once it arrives.",
            "Thanks!"
        ]
    );

    // Low confidence: the tenant's quiz state takes over until answered.
    let mut unsure = Chat::new(&flow, &plugins, &clock);
    let turn = unsure.send("I'm angry");
    let intent = turn.intent.as_ref().unwrap();
    assert!(intent.low_confidence);
    assert_eq!(
        intent.name.as_deref(),
        Some("unknown"),
        "the fallback intent"
    );
    assert_eq!(intent.top.as_deref(), Some("complaint"));
    assert_eq!(texts(&turn), ["Quick check: what is 2 + 2?"]);
    assert_eq!(texts(&unsure.send("5")), ["Not quite, try again."]);
    let done = unsure.send("4");
    assert_eq!(texts(&done), ["Correct!", "Thanks!"]);
    assert_eq!(done.updates.get("variables.quiz_score"), Some(&json!(1)));
}

#[test]
fn calls_carry_the_plugin_versions_the_conversation_is_pinned_to() {
    let flow = plugin_flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.conversation
        .plugin_versions
        .insert("is-vip".into(), "2.1.0".into());
    chat.send("refund please");
    assert_eq!(
        plugins.calls()[..2],
        ["intent:tenant-a:nlu", "condition:tenant-a:is-vip@2.1.0"]
    );
}

#[test]
fn a_failing_condition_plugin_is_reported_and_the_next_transition_tried() {
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "check",
        "states": {
            "check": { "type": "condition", "transitions": [
                { "condition": "plugin", "plugin": "crashy", "target_state": "a", "priority": 1 },
                { "condition": "expression", "expression": "slots.missing == 1", "target_state": "a", "priority": 2 },
                { "condition": "default", "target_state": "b" } ] },
            "a": { "type": "end", "config": { "message": "a" } },
            "b": { "type": "end", "config": { "message": "b" } }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let turn = Chat::new(&flow, &plugins, &clock).send("go");
    assert_eq!(texts(&turn), ["b"]);
    let kinds: Vec<TurnErrorKind> = turn.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [TurnErrorKind::Transition, TurnErrorKind::Transition]
    );
    assert!(
        turn.errors[0].message.contains("plugin crashy crashed"),
        "{:?}",
        turn.errors
    );
    assert!(
        turn.errors[1].message.contains("transition 1 (expression)"),
        "{:?}",
        turn.errors
    );
}

#[test]
fn a_failing_action_is_reported_and_the_others_still_run() {
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": {
            "a": { "type": "end",
                   "config": { "message": "total={{ variables.total }} n={{ variables.n }}" },
                   "entry_actions": [
                       { "type": "set_variable", "name": "n", "value": 1 },
                       { "type": "plugin", "plugin": "unknown-action" },
                       { "type": "set_variable", "name": "total", "expression": "variables.n * 3" },
                       { "type": "set_variable", "name": "bad", "expression": "variables.nothing + 1" }
                   ] }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let turn = Chat::new(&flow, &plugins, &clock).send("go");
    assert_eq!(texts(&turn), ["total=3 n=1"]);
    let outcomes: Vec<(String, bool)> = turn.actions.iter().map(|a| (a.label(), a.ok)).collect();
    assert_eq!(
        outcomes,
        [
            ("set_variable:n".to_owned(), true),
            ("plugin:unknown-action".to_owned(), false),
            ("set_variable:total".to_owned(), true),
            ("set_variable:bad".to_owned(), false)
        ]
    );
    assert_eq!(turn.errors.len(), 2);
    assert!(turn.errors.iter().all(|e| e.kind == TurnErrorKind::Action));
}

#[test]
fn the_loop_guard_stops_a_turn_that_never_waits() {
    // Tenant state types may or may not wait, so the validator lets this
    // through; the guard catches it at run time.
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "settings": { "max_steps_per_turn": 10 },
        "states": {
            "a": { "type": "plugin:bounce", "transitions": [ { "condition": "default", "target_state": "b" } ] },
            "b": { "type": "plugin:bounce", "transitions": [ { "condition": "default", "target_state": "a" } ] }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let turn = chat.send("go");
    assert_eq!(turn.visited.len(), 10);
    let kinds: Vec<TurnErrorKind> = turn.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [TurnErrorKind::LoopGuard],
        "the turn stops at the guard"
    );
    assert_eq!(plugins.calls().len(), 10);
}

#[test]
fn a_conversation_in_a_state_the_flow_lacks_goes_to_the_recovery_state() {
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "2", "initial_state": "start",
        "recovery_state": "sorry",
        "states": {
            "start": { "type": "wait", "transitions": [ { "condition": "any_input", "target_state": "start" } ] },
            "sorry": { "type": "response", "config": { "response_templates": { "default": "Sorry, something changed. Let's start again." } },
                       "transitions": [ { "condition": "default", "target_state": "start" } ] }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    chat.conversation.current_state = "removed_in_v2".into();
    let turn = chat.send("hello?");
    assert_eq!(turn.errors[0].kind, TurnErrorKind::StateNotFound);
    assert!(
        turn.errors[0]
            .message
            .contains("\"removed_in_v2\" is not in flow f 2")
    );
    assert_eq!(
        texts(&turn),
        ["Sorry, something changed. Let's start again."]
    );
    assert_eq!(turn.state, "start");
}

fn timeout_flow() -> Flow {
    flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "ask",
        "states": {
            "ask": { "type": "wait", "config": { "prompt": "Still there?", "timeout_ms": 30000 },
                     "transitions": [
                         { "condition": "any_input", "target_state": "thanks" },
                         { "condition": "timeout", "target_state": "nudge" } ] },
            "nudge": { "type": "wait", "config": { "prompt": "I'll be here when you're back." },
                       "transitions": [ { "condition": "any_input", "target_state": "thanks" } ] },
            "thanks": { "type": "end", "config": { "message": "Thanks for answering: {{ event.text }}" } }
        }
    }))
}

#[test]
fn a_timeout_event_fires_only_after_the_deadline() {
    let flow = timeout_flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(1_000_000));
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let first = chat.event(Event::timeout());
    assert_eq!(texts(&first), ["Still there?"]);
    assert_eq!(first.wake_at_ms, Some(1_030_000));

    clock.advance(29_999);
    let early = chat.event(Event::timeout());
    assert_eq!(early.state, "ask");
    assert!(early.messages.is_empty());

    clock.advance(1);
    let fired = chat.event(Event::timeout());
    assert_eq!(fired.state, "nudge");
    assert_eq!(texts(&fired), ["I'll be here when you're back."]);
    assert_eq!(fired.wake_at_ms, None);
}

#[test]
fn a_message_after_the_deadline_lets_the_timeout_happen_first() {
    let flow = timeout_flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(0));
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.event(Event::timeout());
    clock.advance(60_000);
    let turn = chat.send("sorry, was away");
    // The timeout moved to "nudge" (whose prompt is held: a message is
    // waiting), and the message then answered "nudge".
    assert_eq!(turn.visited, ["nudge", "thanks"]);
    assert_eq!(texts(&turn), ["Thanks for answering: sorry, was away"]);
}

#[test]
fn a_runaway_template_is_stopped_and_reported() {
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": {
            "a": { "type": "end",
                   "entry_actions": [ { "type": "send_message", "message": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}" } ],
                   "config": { "message": "still here" } }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let turn = Chat::new(&flow, &plugins, &clock).send("go");
    assert_eq!(texts(&turn), ["still here"]);
    assert_eq!(turn.errors[0].kind, TurnErrorKind::Action);
    assert!(turn.errors[0].message.contains("fuel"), "{:?}", turn.errors);
}

#[test]
fn personalization_off_sends_templates_verbatim() {
    let flow = flow(json!({
        "flow_id": "f", "name": "f", "version": "1", "initial_state": "a",
        "states": {
            "a": { "type": "response",
                   "config": { "response_templates": { "default": "Use {{ braces }} freely" }, "personalization": false,
                               "response_type": "markdown", "delay_ms": 300, "typing_indicator": false },
                   "transitions": [ { "condition": "default", "target_state": "b" } ] },
            "b": { "type": "end" }
        }
    }));
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let turn = Chat::new(&flow, &plugins, &clock).send("go");
    let message = &turn.messages[0];
    assert_eq!(message.text, "Use {{ braces }} freely");
    assert_eq!(message.response_type, "markdown");
    assert_eq!(message.delay_ms, Some(300));
    assert!(!message.typing_indicator);
}

#[test]
fn a_step_can_run_on_a_multithreaded_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let flow = timeout_flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let event = Event::message("hi");
    let future = chat.machine.step(&flow, &mut chat.conversation, &event);
    assert_send(&future);
    assert_eq!(futures::executor::block_on(future).state, "thanks");
}
