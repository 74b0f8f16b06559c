//! No-match and no-input: handlers used in order, one per occurrence in a
//! row, counters reset by a match, escalation to another state.

mod common;

use common::{Chat, FakePlugins, ManualClock, flow, texts};
use mcp_flow::{Event, Severity, validate};
use serde_json::{Value, json};

fn desk() -> Value {
    json!({
        "flow_id": "desk",
        "name": "Desk",
        "version": "1.0.0",
        "initial_state": "menu",
        "intents": {
            "order": { "patterns": ["\\border\\b"] },
            "track": { "patterns": ["\\btrack\\b"] }
        },
        "no_match": [ { "response": "I didn't get that." } ],
        "states": {
            "menu": {
                "type": "intent",
                "config": { "confidence_threshold": 0.5, "prompt": "Order or track?" },
                "transitions": [
                    { "condition": "intent_match", "condition_value": "order", "target_state": "ordered" },
                    { "condition": "intent_match", "condition_value": "track", "target_state": "tracking" }
                ],
                "no_match": [
                    { "response": "Sorry, order or track?", "reprompt": false },
                    { "response": "Miss number {{ state.no_match }}." },
                    { "response": "Let me find a person.", "target_state": "handoff" }
                ],
                "no_input": {
                    "timeout_ms": 60000,
                    "handlers": [
                        { "response": "Still there?" },
                        { "response": "Bye for now.", "target_state": "bye" }
                    ]
                }
            },
            "tracking": {
                "type": "response",
                "config": { "response_templates": { "default": "Tracking." } },
                "transitions": [ { "condition": "default", "target_state": "menu" } ]
            },
            "pause": {
                "type": "wait",
                "transitions": [
                    { "condition": "expression", "expression": "event.text == 'go'", "target_state": "menu" }
                ]
            },
            "ordered": { "type": "end", "config": { "message": "Ordered." } },
            "handoff": { "type": "end", "config": { "message": "A colleague takes over." } },
            "bye": { "type": "end" }
        }
    })
}

#[test]
fn no_match_handlers_answer_in_turn_and_escalate() {
    let flow = flow(desk());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("hello");
    assert_eq!(texts(&first), ["Sorry, order or track?"]);
    assert_eq!(first.state, "menu");
    assert_eq!(first.actions[0].label(), "no_match:1");

    // Staying, the second handler says again what the state asks.
    let second = chat.send("what?");
    assert_eq!(texts(&second), ["Miss number 2.", "Order or track?"]);

    let third = chat.send("blah");
    assert_eq!(
        texts(&third),
        ["Let me find a person.", "A colleague takes over."]
    );
    assert_eq!(third.state, "handoff");
    assert!(third.ended);
}

#[test]
fn a_match_starts_the_count_again() {
    let flow = flow(desk());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    chat.send("hello");
    assert_eq!(chat.conversation.unanswered.no_match, 1);
    let tracked = chat.send("track it");
    assert_eq!(texts(&tracked), ["Tracking.", "Order or track?"]);
    assert_eq!(chat.conversation.unanswered.no_match, 0);
    assert_eq!(texts(&chat.send("hmm")), ["Sorry, order or track?"]);
}

#[test]
fn a_state_without_handlers_uses_the_flows() {
    let mut definition = desk();
    definition["initial_state"] = json!("pause");
    let flow = flow(definition);
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let missed = chat.send("nope");
    assert_eq!(texts(&missed), ["I didn't get that."]);
    assert_eq!(missed.state, "pause");
    // The flow has one handler: it answers every miss after the first too.
    assert_eq!(texts(&chat.send("still nope")), ["I didn't get that."]);
    assert_eq!(chat.send("go").state, "menu");
}

#[test]
fn silence_runs_the_no_input_handlers_then_stops_asking() {
    let flow = flow(desk());
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(1_000));
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let entered = futures::executor::block_on(chat.machine.enter(&flow, &mut chat.conversation));
    assert_eq!(entered.wake_at_ms, Some(61_000));

    // Not due yet: nothing happens.
    clock.advance(30_000);
    assert!(chat.event(Event::timeout()).messages.is_empty());

    clock.advance(30_000);
    let reminded = chat.event(Event::timeout());
    assert_eq!(texts(&reminded), ["Still there?", "Order or track?"]);
    assert_eq!(reminded.actions[0].label(), "no_input:1");
    // The next one is due a whole timeout after the reminder.
    assert_eq!(reminded.wake_at_ms, Some(121_000));

    // A message starts the silence count again.
    clock.advance(10_000);
    chat.send("hmm");
    assert_eq!(chat.conversation.unanswered.no_input, 0);
    clock.advance(60_000);
    assert_eq!(texts(&chat.event(Event::timeout()))[0], "Still there?");

    clock.advance(60_000);
    let gone = chat.event(Event::timeout());
    assert_eq!(texts(&gone), ["Bye for now."]);
    assert!(gone.ended);
}

#[test]
fn silence_is_answered_once_per_handler_never_forever() {
    let mut definition = desk();
    definition["states"]["menu"]["no_input"]["handlers"] = json!([{ "response": "Still there?" }]);
    let flow = flow(definition);
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    futures::executor::block_on(chat.machine.enter(&flow, &mut chat.conversation));

    clock.advance(60_000);
    let reminded = chat.event(Event::timeout());
    assert_eq!(texts(&reminded)[0], "Still there?");
    assert_eq!(reminded.wake_at_ms, None, "no handler left to run");
    clock.advance(600_000);
    assert!(chat.event(Event::timeout()).messages.is_empty());
}

#[test]
fn the_validator_checks_handlers() {
    let mut definition = desk();
    definition["no_match"] = json!([{ "reprompt": true }]);
    definition["states"]["menu"]["no_match"][2]["target_state"] = json!("nobody");
    definition["states"]["menu"]["no_input"]["timeout_ms"] = json!(10);
    definition["states"]["tracking"]["no_match"] = json!(vec![json!({ "response": "x" }); 11]);
    definition["states"]["bye"]["no_match"] = json!([{ "response": "never said" }]);
    let report = validate(definition);
    let found: Vec<(String, Severity, String)> = report
        .issues
        .iter()
        .map(|i| (i.path.clone(), i.severity, i.message.clone()))
        .collect();
    let has = |path: &str, severity: Severity, needle: &str| {
        found
            .iter()
            .any(|(p, s, m)| p == path && *s == severity && m.contains(needle))
    };
    assert!(
        has(
            "no_match[0]",
            Severity::Error,
            "needs a response or a target_state"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            "states.menu.no_match[2].target_state",
            Severity::Error,
            "\"nobody\" is not one of the flow's states"
        ),
        "{found:#?}"
    );
    assert!(
        has(
            "states.menu.no_input.timeout_ms",
            Severity::Error,
            "between 1000 and 86400000"
        ),
        "{found:#?}"
    );
    assert!(
        has("states.tracking.no_match", Severity::Error, "at most 10"),
        "{found:#?}"
    );
    assert!(
        has("states.bye", Severity::Warning, "never waits"),
        "{found:#?}"
    );
}
