//! Rich replies both ways: quick replies, buttons, cards, media and
//! locations out, templated like text; taps, locations and forms in, as
//! events transitions match.

mod common;

use common::{Chat, FakePlugins, ManualClock, texts};
use mcp_flow::{ButtonKind, Event, Flow, validate};
use serde_json::{Value, json};

fn menu() -> Value {
    json!({
        "flow_id": "menu",
        "name": "Menu",
        "version": "1.0.0",
        "initial_state": "welcome",
        "states": {
            "welcome": {
                "type": "response",
                "config": {
                    "response_templates": { "default": "Hi {{ user.name | default('there') }}!" },
                    "rich": {
                        "quick_replies": [
                            { "title": "Order", "payload": "ORDER" },
                            { "title": "Find us" }
                        ],
                        "cards": [{
                            "title": "Margherita",
                            "image_url": "https://example.com/m.png",
                            "buttons": [
                                { "type": "postback", "title": "Add", "payload": "ADD_MARGHERITA" },
                                { "type": "url", "title": "More", "url": "https://example.com/{{ user.name }}" }
                            ]
                        }]
                    }
                },
                "transitions": [
                    { "condition": "payload", "condition_value": "ORDER", "target_state": "size" },
                    { "condition": "payload", "target_state": "tapped" },
                    { "condition": "location_shared", "target_state": "nearest" },
                    { "condition": "form_submitted", "target_state": "thanks" }
                ]
            },
            "size": {
                "type": "slot_filling",
                "config": {
                    "required_slots": ["size"],
                    "validation_rules": { "size": "one_of:small,large" },
                    "prompts": {
                        "size": {
                            "text": "Which size?",
                            "rich": { "quick_replies": [{ "title": "Small" }, { "title": "Large" }] }
                        }
                    }
                },
                "transitions": [ { "condition": "slot_filled", "target_state": "done" } ]
            },
            "tapped": {
                "type": "end",
                "config": { "message": "You tapped {{ event.data.payload }}." }
            },
            "nearest": {
                "type": "end",
                "config": { "message": "Nearest to {{ event.data.location.latitude }}." }
            },
            "thanks": { "type": "end", "config": { "message": "Thanks, {{ event.data.form.name }}." } },
            "done": { "type": "end" }
        }
    })
}

fn flow() -> Flow {
    Flow::from_json(&menu().to_string()).expect("the test flow is valid")
}

#[test]
fn replies_carry_rich_content_rendered_like_text() {
    let flow = flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.conversation
        .user_profile
        .insert("name".into(), json!("Ada"));

    let hello = chat.send("hi");
    let message = &hello.messages[0];
    assert_eq!(message.text, "Hi Ada!");
    let titles: Vec<&str> = message
        .rich
        .quick_replies
        .iter()
        .map(|q| q.title.as_str())
        .collect();
    assert_eq!(titles, ["Order", "Find us"]);
    let more = &message.rich.cards[0].buttons[1];
    assert_eq!(more.kind, ButtonKind::Url);
    assert_eq!(more.url.as_deref(), Some("https://example.com/Ada"));
}

#[test]
fn a_tapped_quick_reply_is_an_event_with_its_payload() {
    let flow = flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");

    let tap = chat.event(Event::message("Order").with_data("payload", json!("ORDER")));
    assert_eq!(tap.state, "size");
    assert_eq!(texts(&tap), ["Which size?"]);
    let sizes: Vec<&str> = tap.messages[0]
        .rich
        .quick_replies
        .iter()
        .map(|q| q.title.as_str())
        .collect();
    assert_eq!(sizes, ["Small", "Large"]);
    // The quick reply's title is the answer.
    assert_eq!(chat.send("Large").state, "done");
}

#[test]
fn other_payloads_locations_and_forms_are_events_too() {
    let flow = flow();
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());

    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let added = chat.event(Event::message("").with_data("payload", json!("ADD_MARGHERITA")));
    assert_eq!(texts(&added), ["You tapped ADD_MARGHERITA."]);

    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let located = chat.event(
        Event::message("").with_data("location", json!({ "latitude": 52.5, "longitude": 13.4 })),
    );
    assert_eq!(texts(&located), ["Nearest to 52.5."]);

    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let form = chat.event(Event::message("").with_data("form", json!({ "name": "Ada" })));
    assert_eq!(texts(&form), ["Thanks, Ada."]);

    // A plain message is none of these: the greeting waits on.
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    assert_eq!(chat.send("hello?").state, "welcome");
}

#[test]
fn the_validator_checks_rich_content() {
    let mut definition = menu();
    definition["states"]["welcome"]["config"]["rich"]["buttons"] =
        json!([{ "type": "phone", "title": "Call" }]);
    definition["states"]["welcome"]["config"]["rich"]["cards"][0]["title"] = json!("{{ oops");
    let report = validate(definition);
    let errors: Vec<(String, String)> = report
        .errors()
        .map(|i| (i.path.clone(), i.message.clone()))
        .collect();
    let has =
        |path: &str, needle: &str| errors.iter().any(|(p, m)| p == path && m.contains(needle));
    assert!(
        has(
            "states.welcome.config.rich.buttons[0]",
            "a phone button needs `phone`"
        ),
        "{errors:#?}"
    );
    assert!(
        has("states.welcome.config.rich", "template does not compile"),
        "{errors:#?}"
    );
}
