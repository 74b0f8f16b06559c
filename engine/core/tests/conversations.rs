//! Whole conversations against the example flows, turn by turn.

mod common;

use common::{Chat, FakePlugins, ManualClock, example, texts};
use mcp_flow::{ConversationStatus, Event, TurnErrorKind};
use serde_json::json;

#[test]
fn greeting_flow_greets_then_routes_by_intent() {
    let flow = example("greeting");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(1_000));
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.conversation
        .user_profile
        .insert("name".into(), json!("Ada"));

    // The first message enters the greeting; the greeting's any_input takes
    // it to the intent state, where "hello" means nothing: the greeting's
    // question answers it, and the machine waits for the next message.
    let first = chat.send("hello");
    assert_eq!(
        texts(&first),
        ["Hi Ada! Welcome to Pizza Planet. How can I help?"]
    );
    assert_eq!(first.visited, ["greeting", "detect_intent"]);
    assert_eq!(first.state, "detect_intent");
    assert_eq!(first.updates.get("variables.greeted"), Some(&json!(true)));

    let hours = chat.send("When are you open?");
    assert_eq!(
        hours.intent.as_ref().unwrap().name.as_deref(),
        Some("opening_hours")
    );
    assert_eq!(
        texts(&hours),
        ["We're open every day from 11:00 to 23:00. Anything else?"]
    );
    assert_eq!(hours.state, "detect_intent");

    let unclear = chat.send("what's the weather like");
    assert!(unclear.intent.as_ref().unwrap().low_confidence);
    assert_eq!(unclear.visited, ["clarify", "detect_intent"]);

    let order = chat.send("I'd like two pizzas please");
    assert_eq!(order.visited, ["start_order", "handed_off"]);
    assert_eq!(texts(&order), ["Great, let's get your order started."]);
    let trigger = order.trigger_flow.as_ref().unwrap();
    assert_eq!(trigger.flow_id, "pizza_order");
    assert_eq!(order.events[0].event, "order_started");
    assert!(order.ended);
    assert_eq!(
        chat.conversation.previous_states,
        [
            "greeting",
            "detect_intent",
            "hours",
            "detect_intent",
            "clarify",
            "detect_intent",
            "start_order"
        ]
    );
    assert_eq!(
        chat.conversation.intent_history,
        ["opening_hours", "order_pizza"]
    );
}

#[test]
fn the_channel_picks_the_response_template() {
    let flow = example("greeting");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let turn = chat.event(Event::message("hi").with_data("channel", json!("whatsapp")));
    assert_eq!(texts(&turn), ["Hey there 👋 How can I help?"]);
}

#[test]
fn global_handlers_apply_in_every_state() {
    let flow = example("greeting");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hello");

    let help = chat.send("Help!");
    assert_eq!(
        texts(&help),
        ["I can take a pizza order, check on an order, or tell you our opening hours."]
    );
    assert_eq!(help.state, "detect_intent", "help stays where it was");
    assert_eq!(help.actions[0].label(), "global_handler:help");

    let restart = chat.send("start over");
    assert_eq!(
        texts(&restart),
        [
            "Okay, let's start over.",
            "Hi there! Welcome to Pizza Planet. How can I help?"
        ]
    );
    // The restart re-entered the greeting, which now waits for any input
    // and hands it on to the intent state.
    assert_eq!(restart.state, "greeting");
    assert_eq!(
        chat.send("pizza").visited,
        ["detect_intent", "start_order", "handed_off"]
    );
}

#[test]
fn slot_filling_collects_validates_and_confirms_an_order() {
    let flow = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    // The first message is read for slots before anything is asked; "hi"
    // has none, so the first question follows.
    let first = chat.send("hi");
    assert_eq!(
        texts(&first),
        ["What size would you like: small, medium or large?"]
    );
    let wrong = chat.send("giant");
    assert_eq!(
        texts(&wrong),
        ["Sorry, we have small, medium or large. Which size?"]
    );

    // One message can fill several slots: options are found anywhere.
    let turn = chat.send("a large pepperoni please");
    assert_eq!(texts(&turn), ["How many large pepperoni pizzas?"]);
    assert_eq!(turn.updates.get("slots.size"), Some(&json!("large")));
    assert_eq!(turn.updates.get("slots.topping"), Some(&json!("pepperoni")));

    // Out of range: the default retry prompt says what is expected.
    let turn = chat.send("50");
    assert_eq!(
        texts(&turn),
        [
            "Sorry, I need a whole number from 1 to 10.",
            "How many large pepperoni pizzas?"
        ]
    );
    assert_eq!(chat.conversation.slot_filling.as_ref().unwrap().retries, 1);

    let turn = chat.send("two");
    assert_eq!(
        texts(&turn),
        ["That's 2 × large pepperoni for $25.00. Shall I place the order?"]
    );
    assert_eq!(turn.updates.get("variables.total"), Some(&json!(25.0)));
    assert_eq!(turn.state, "confirm");

    let done = chat.send("yes please");
    assert_eq!(
        texts(&done),
        ["Order placed! Your 2 pizza(s) will be with you in about 30 minutes."]
    );
    assert!(done.ended);
    assert_eq!(done.events[0].event, "order_placed");
    assert_eq!(done.events[0].data["source"], json!("chat"));
    assert_eq!(chat.conversation.status, ConversationStatus::Ended);
}

#[test]
fn declining_the_confirmation_starts_the_order_again() {
    let flow = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("small veggie");
    chat.send("3");
    let turn = chat.send("no");
    assert_eq!(
        texts(&turn),
        [
            "No problem, let's start again.",
            "What size would you like: small, medium or large?"
        ]
    );
    assert_eq!(turn.state, "collect_order");
    assert!(chat.conversation.slots.is_empty());
}

#[test]
fn slot_retries_run_out_into_the_fallback_state() {
    let flow = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hmm");
    chat.send("giant");
    chat.send("jumbo");
    let last = chat.send("the biggest you have");
    assert_eq!(
        texts(&last),
        ["Let me hand you over to a colleague who can help."]
    );
    assert_eq!(last.state, "handoff");
    assert!(last.ended);
    assert_eq!(last.errors[0].kind, TurnErrorKind::SlotRetriesExhausted);
}

#[test]
fn entities_from_the_channel_fill_slots_without_asking() {
    let flow = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    let event = Event::message("order please").with_data(
        "entities",
        json!({ "size": "Medium", "topping": "hawaiian", "quantity": "4" }),
    );
    let turn = chat.event(event);
    assert_eq!(turn.state, "confirm");
    assert_eq!(chat.conversation.slots["quantity"], json!(4));
    assert_eq!(chat.conversation.slots["size"], json!("medium"));
}

#[test]
fn a_message_after_the_end_starts_the_flow_over() {
    let flow = example("order_status");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    assert!(chat.send("AB-1234").ended);
    let again = chat.send("hello again");
    assert_eq!(again.state, "ask_order_id");
    assert!(chat.conversation.slots.is_empty());
    assert_eq!(chat.conversation.status, ConversationStatus::Active);
}

#[test]
fn integration_success_maps_the_response_into_the_conversation() {
    let flow = example("order_status");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);

    let first = chat.send("hi, where's my pizza?");
    assert_eq!(
        texts(&first),
        ["What's your order number? It looks like AB-1234."]
    );

    let turn = chat.send("it's ab-1234");
    assert_eq!(
        texts(&turn),
        [
            "Order AB-1234 is out for delivery, arriving in about 15 minutes.",
            "Anything else, just ask."
        ]
    );
    assert_eq!(turn.visited, ["lookup", "report_status", "done"]);
    assert_eq!(
        turn.updates.get("variables.order_status"),
        Some(&json!("out for delivery"))
    );
    assert_eq!(plugins.calls(), ["tool:tenant-a:order-api"]);
    let record = &chat.conversation.integration_results["order-api"];
    assert_eq!(record["success"], json!(true));
    assert_eq!(record["data"]["eta_minutes"], json!(15));
}

#[test]
fn integration_errors_take_the_error_branch_after_retries() {
    let flow = example("order_status");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let turn = chat.send("XY-9999");
    assert_eq!(
        texts(&turn),
        [
            "I couldn't reach our order system just now.",
            "Sorry about that. Please try again in a few minutes."
        ]
    );
    assert_eq!(turn.state, "apology");
    assert_eq!(turn.errors[0].kind, TurnErrorKind::Integration);
    assert!(turn.errors[0].message.contains("order XY9999 not found"));
    // max_attempts is 2, and a plugin's own failure is worth a retry.
    assert_eq!(plugins.calls().len(), 2);
    assert_eq!(
        chat.conversation.integration_results["order-api"]["attempts"],
        json!(2)
    );
}

#[test]
fn a_transient_integration_failure_is_retried_with_backoff() {
    let flow = example("order_status");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let before = mcp_flow::Clock::now_ms(&&clock);
    let turn = chat.send("EF-0000");
    assert_eq!(turn.state, "done");
    assert_eq!(turn.errors, []);
    assert_eq!(plugins.calls().len(), 2);
    // The backoff was slept on the clock.
    assert_eq!(mcp_flow::Clock::now_ms(&&clock) - before, 100);
}

#[test]
fn an_integration_that_never_answers_times_out() {
    let flow = example("order_status");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::default());
    let mut chat = Chat::new(&flow, &plugins, &clock);
    chat.send("hi");
    let turn = chat.send("SL-0000");
    assert_eq!(turn.state, "apology");
    assert!(
        turn.errors[0]
            .message
            .contains("did not answer within 2000 ms"),
        "{:?}",
        turn.errors
    );
    assert_eq!(plugins.calls().len(), 2, "a timeout is retried too");
}

#[test]
fn a_triggered_flow_takes_over_with_the_conversation_so_far() {
    let greeting = example("greeting");
    let pizza = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(1_000));
    let mut chat = Chat::new(&greeting, &plugins, &clock);
    chat.send("hello");
    let handed_off = chat.send("I'd like two pizzas please");
    let trigger = handed_off.trigger_flow.clone().unwrap();
    assert_eq!(trigger.flow_id, "pizza_order");

    let mut conversation = chat.conversation.clone();
    conversation
        .switch_flow(&pizza, trigger.target_state.as_deref(), 2_000)
        .unwrap();
    assert_eq!(conversation.flow_id, "pizza_order");
    assert_eq!(conversation.status, ConversationStatus::New);
    assert_eq!(conversation.previous_states.last().unwrap(), "handed_off");
    // The greeting's variables travel with the conversation.
    assert_eq!(conversation.variables.get("greeted"), Some(&json!(true)));

    let mut chat = Chat::new(&pizza, &plugins, &clock);
    chat.conversation = conversation;
    let turns = chat.conversation.turn;
    let entered = futures::executor::block_on(chat.machine.enter(&pizza, &mut chat.conversation));
    assert_eq!(
        texts(&entered),
        ["What size would you like: small, medium or large?"],
        "entering the flow asks its first question"
    );
    assert_eq!(entered.state, "collect_order");
    assert_eq!(
        chat.conversation.turn, turns,
        "entering is part of the turn before"
    );
    let order = chat.send("a large pepperoni");
    assert_eq!(texts(&order), ["How many large pepperoni pizzas?"]);
    assert_eq!(chat.conversation.slots.get("size"), Some(&json!("large")));
}

#[test]
fn a_triggered_flow_can_start_at_a_named_state_and_refuses_unknown_ones() {
    let greeting = example("greeting");
    let pizza = example("pizza_order");
    let (plugins, clock) = (FakePlugins::default(), ManualClock::at(1_000));
    let mut chat = Chat::new(&greeting, &plugins, &clock);
    chat.send("hello");

    let before = chat.conversation.clone();
    let error = chat
        .conversation
        .switch_flow(&pizza, Some("nowhere"), 2_000)
        .unwrap_err();
    assert!(error.contains("\"nowhere\""), "{error}");
    assert_eq!(
        chat.conversation, before,
        "a refused switch changes nothing"
    );

    chat.conversation
        .switch_flow(&pizza, Some("handoff"), 2_000)
        .unwrap();
    let mut chat = Chat {
        flow: &pizza,
        machine: chat.machine,
        conversation: chat.conversation,
    };
    let turn = chat.send("hi");
    assert_eq!(turn.visited, ["handoff"]);
    assert_eq!(
        texts(&turn),
        ["Let me hand you over to a colleague who can help."]
    );
    assert!(turn.ended);
}
