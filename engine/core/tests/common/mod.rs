//! Fakes of the core's ports and helpers to play conversations.
#![allow(dead_code)]

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use mcp_flow::{
    ActionOutput, Classification, Clock, Conversation, Entity, Event, Flow, IntentScore, Machine,
    PluginCall, PluginError, PluginRuntime, StateOutput, StepResult,
};
use serde_json::{Value, json};

/// A clock that only moves when told to, or when something sleeps on it.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn at(ms: i64) -> Self {
        ManualClock {
            now: AtomicI64::new(ms),
        }
    }

    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for &ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Sleeping moves time on and completes at once, when first polled: a
    /// timeout that loses its race never moves the clock.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        let now = &self.now;
        async move {
            now.fetch_add(duration.as_millis() as i64, Ordering::SeqCst);
        }
    }
}

/// Plugins a tenant might write, behaving as the tests need.
#[derive(Debug, Default)]
pub struct FakePlugins {
    pub calls: Mutex<Vec<String>>,
    flaky_failures: AtomicU32,
}

impl FakePlugins {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, kind: &str, call: &PluginCall<'_>) {
        self.calls.lock().unwrap().push(match call.version {
            Some(version) => format!("{kind}:{}:{}@{version}", call.tenant_id, call.plugin),
            None => format!("{kind}:{}:{}", call.tenant_id, call.plugin),
        });
    }
}

fn failed(call: &PluginCall<'_>, message: &str) -> PluginError {
    PluginError::Failed {
        plugin: call.plugin.to_owned(),
        message: message.to_owned(),
    }
}

impl PluginRuntime for &FakePlugins {
    async fn evaluate_condition(&self, call: PluginCall<'_>) -> Result<bool, PluginError> {
        self.record("condition", &call);
        match call.plugin {
            // A VIP check: the user's profile says so, or they spent enough.
            "is-vip" => {
                let min = call.args["min_spent"].as_f64().unwrap_or(100.0);
                let profile = &call.conversation.user_profile;
                Ok(profile.get("vip") == Some(&json!(true))
                    || profile.get("spent").and_then(Value::as_f64).unwrap_or(0.0) >= min)
            }
            _ => Err(PluginError::Trap {
                plugin: call.plugin.to_owned(),
                message: "unreachable executed".into(),
            }),
        }
    }

    async fn run_action(&self, call: PluginCall<'_>) -> Result<ActionOutput, PluginError> {
        self.record("action", &call);
        match call.plugin {
            // Prices an order into variables.
            "price" => {
                let slots = &call.conversation.slots;
                let unit = match slots.get("size").and_then(Value::as_str) {
                    Some("large") => 12.5,
                    _ => 10.0,
                };
                let quantity = slots.get("quantity").and_then(Value::as_f64).unwrap_or(1.0);
                let discount = call.args["discount"].as_f64().unwrap_or(0.0);
                let mut updates = serde_json::Map::new();
                updates.insert("total".into(), json!(unit * quantity * (1.0 - discount)));
                Ok(ActionOutput {
                    updates,
                    messages: vec!["Price calculated.".into()],
                })
            }
            _ => Err(failed(&call, "no such action")),
        }
    }

    async fn call_tool(&self, call: PluginCall<'_>) -> Result<Value, PluginError> {
        self.record("tool", &call);
        match call.args["order_id"].as_str() {
            Some("AB1234") => Ok(json!({ "status": "out for delivery", "eta_minutes": 15 })),
            Some("CD5678") => Ok(json!({ "status": "delivered", "eta_minutes": null })),
            Some("EF0000") => {
                // Fails once, then works: a retry must get through.
                if self.flaky_failures.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(failed(&call, "connection reset"))
                } else {
                    Ok(json!({ "status": "being prepared", "eta_minutes": 25 }))
                }
            }
            Some("SL0000") => std::future::pending().await,
            Some(other) => Err(failed(&call, &format!("order {other} not found"))),
            None => Err(failed(&call, "order_id is required")),
        }
    }

    async fn execute_state(&self, call: PluginCall<'_>) -> Result<StateOutput, PluginError> {
        self.record("state", &call);
        match call.plugin {
            // A one-question quiz: asks on entry, checks the answer.
            "quiz" => {
                let question = call.args["question"].as_str().unwrap_or("?");
                let answer = call.args["answer"].as_str().unwrap_or("");
                Ok(match call.event {
                    None => StateOutput {
                        messages: vec![question.to_owned()],
                        wait_for_input: true,
                        ..Default::default()
                    },
                    Some(event) if event.text.trim() == answer => {
                        let mut updates = serde_json::Map::new();
                        updates.insert("quiz_score".into(), json!(1));
                        StateOutput {
                            updates,
                            messages: vec!["Correct!".into()],
                            outcome: Some("correct".into()),
                            wait_for_input: false,
                        }
                    }
                    Some(_) => StateOutput {
                        messages: vec!["Not quite, try again.".into()],
                        wait_for_input: true,
                        ..Default::default()
                    },
                })
            }
            // A state that never waits: used to build a loop the validator cannot see.
            "bounce" => Ok(StateOutput::default()),
            _ => Err(failed(&call, "no such state type")),
        }
    }

    /// Refunds and complaints; "order <number>" is an entity, and so, with
    /// too little confidence to count, is any "£<amount>".
    async fn classify_intent(&self, call: PluginCall<'_>) -> Result<Classification, PluginError> {
        self.record("intent", &call);
        let text = call
            .event
            .map(|e| e.text.to_lowercase())
            .unwrap_or_default();
        let score = |intent: &str, confidence: f64| IntentScore {
            intent: intent.into(),
            confidence,
        };
        let intents = if text.contains("refund") {
            vec![score("refund", 0.93), score("complaint", 0.4)]
        } else if text.contains("angry") {
            vec![score("complaint", 0.55)]
        } else {
            vec![]
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut entities = Vec::new();
        for pair in words.windows(2) {
            if pair[0] == "order" && pair[1].parse::<u32>().is_ok() {
                entities.push(Entity {
                    name: "order_number".into(),
                    value: json!(pair[1]),
                    confidence: 0.9,
                });
            }
        }
        if let Some(amount) = words.iter().find_map(|w| w.strip_prefix('£')) {
            entities.push(Entity {
                name: "amount".into(),
                value: json!(amount),
                confidence: 0.2,
            });
        }
        Ok(Classification { intents, entities })
    }
}

/// A flow from its JSON; an invalid one fails the test with the report.
pub fn flow(definition: Value) -> Flow {
    Flow::from_value(definition).unwrap_or_else(|report| panic!("{report}"))
}

pub fn example(name: &str) -> Flow {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/flows")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    Flow::from_json(&text).unwrap_or_else(|report| panic!("{}:\n{report}", path.display()))
}

/// One conversation against one flow, turn by turn.
pub struct Chat<'a> {
    pub flow: &'a Flow,
    pub machine: Machine<&'a FakePlugins, &'a ManualClock>,
    pub conversation: Conversation,
}

impl<'a> Chat<'a> {
    pub fn new(flow: &'a Flow, plugins: &'a FakePlugins, clock: &'a ManualClock) -> Self {
        let conversation = Conversation::new("tenant-a", "conv-1", "user-1", flow, clock.now_ms());
        Chat {
            flow,
            machine: Machine::new(plugins, clock),
            conversation,
        }
    }

    pub fn send(&mut self, text: &str) -> StepResult {
        self.event(Event::message(text))
    }

    pub fn event(&mut self, event: Event) -> StepResult {
        futures::executor::block_on(self.machine.step(self.flow, &mut self.conversation, &event))
    }
}

/// The texts of a turn's messages.
pub fn texts(turn: &StepResult) -> Vec<&str> {
    turn.messages.iter().map(|m| m.text.as_str()).collect()
}
