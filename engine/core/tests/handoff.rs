//! Handing a conversation to a person: an end state with a reason, or the
//! caller's bypass_automation; automation stays off until resumed.

mod common;

use common::{Chat, FakePlugins, ManualClock, texts};
use mcp_flow::{ConversationStatus, Event, Flow, Hints};
use serde_json::json;

fn flow() -> Flow {
    Flow::from_json(
        &json!({
            "flow_id": "help",
            "name": "Help",
            "version": "1.0.0",
            "initial_state": "menu",
            "global_handlers": {
                "human": {
                    "phrases": ["talk to a person"],
                    "target_state": "agent"
                }
            },
            "states": {
                "menu": {
                    "type": "wait",
                    "config": { "prompt": "How can I help?" },
                    "transitions": [ { "condition": "any_input", "target_state": "menu" } ]
                },
                "agent": {
                    "type": "end",
                    "config": {
                        "message": "A colleague will be with you shortly.",
                        "handoff": "asked for a person"
                    }
                }
            }
        })
        .to_string(),
    )
    .expect("the test flow is valid")
}

#[test]
fn a_handoff_state_turns_automation_off_until_resumed() {
    let flow = flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(5_000));
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");

    let handed = chat.send("talk to a person");
    assert_eq!(texts(&handed), ["A colleague will be with you shortly."]);
    let handoff = handed.handoff.as_ref().expect("handed off");
    assert_eq!(handoff.reason, "asked for a person");
    assert_eq!(handoff.state, "agent");
    assert_eq!(handoff.since_ms, 5_000);

    // The person talks now: the flow neither answers nor restarts.
    let ignored = chat.send("hello? anyone?");
    assert!(ignored.messages.is_empty());
    assert!(ignored.visited.is_empty());
    assert_eq!(
        ignored.handoff.as_ref().unwrap().reason,
        "asked for a person"
    );
    assert_eq!(ignored.wake_at_ms, None);

    // Resumed, the ended conversation starts over with its next message.
    assert!(chat.conversation.resume_automation().is_some());
    let again = chat.send("hi again");
    assert_eq!(again.handoff, None);
    assert_eq!(again.state, "menu");
    assert_eq!(chat.conversation.status, ConversationStatus::Active);
}

#[test]
fn bypass_automation_sends_a_message_straight_to_a_person() {
    let flow = flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let bypassed = chat.event(Event::message("I need a human").with_hints(Hints {
        bypass_automation: true,
        ..Hints::default()
    }));
    assert!(bypassed.messages.is_empty(), "the flow did not run");
    assert_eq!(bypassed.handoff.unwrap().reason, "bypass_automation");
    assert!(chat.send("still there?").messages.is_empty());
}

#[test]
fn expected_response_type_picks_the_template() {
    let flow = Flow::from_json(
        &json!({
            "flow_id": "voice",
            "name": "Voice",
            "version": "1.0.0",
            "initial_state": "hello",
            "states": {
                "hello": {
                    "type": "response",
                    "config": { "response_templates": {
                        "default": "Hello! Tap a button below.",
                        "voice": "Hello! Say order or track."
                    } },
                    "transitions": [ { "condition": "any_input", "target_state": "bye" } ]
                },
                "bye": { "type": "end" }
            }
        })
        .to_string(),
    )
    .unwrap();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let voice = chat.event(Event::message("hi").with_hints(Hints {
        expected_response_type: Some("voice".into()),
        ..Hints::default()
    }));
    assert_eq!(texts(&voice), ["Hello! Say order or track."]);
}
