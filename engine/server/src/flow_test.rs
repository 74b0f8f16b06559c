//! `mcp-engine flow test FLOW SCENARIOS`: scripted conversations played
//! against a flow and its plugins, offline, with pass or fail per turn, so
//! tenants can test their flows in their own CI.
//!
//! The scenarios file (JSON):
//!
//! ```json
//! {
//!   "plugins": { "vip-check": "plugins/vip_check.wasm",
//!                "order-api": { "path": "order_api.wasm", "config": { "base_url": "http://127.0.0.1:8080" } } },
//!   "allow": ["127.0.0.1:8080"],
//!   "scenarios": [
//!     { "name": "orders a pizza", "user_profile": { "name": "Ada" },
//!       "turns": [
//!         { "say": "a large pepperoni", "expect": { "reply": "How many large pepperoni pizzas?", "slots": { "size": "large" } } },
//!         { "after_ms": 60000, "expect": { "state": "nudged" } }
//!       ] }
//!   ]
//! }
//! ```
//!
//! A turn either says something or lets `after_ms` pass and delivers the
//! timeout event a waiting state gets then. One flow is played: a
//! `trigger_flow` is reported (and `expect.trigger_flow` checks it) but not
//! followed. Paths are relative to the
//! scenarios file. Every scenario starts a fresh conversation at a fixed
//! clock, so runs repeat exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use mcp_flow::model::Object;
use mcp_flow::{Clock, Conversation, Event, Flow, Hints, Machine, StepResult};
use mcp_wasm::{AllowList, HostConfig, PluginHost, TenantPolicy};
use serde::Deserialize;
use serde_json::Value;

/// The tenant the plugins are installed for; nothing leaves this process.
const TENANT: &str = "flow-test";
/// Where every scenario's clock starts: 2026-01-01T00:00:00Z.
const START_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Plugin name → component path, or `{ "path", "config" }`.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginSpec>,
    /// Hosts tool plugins may call, e.g. "127.0.0.1:8080".
    #[serde(default)]
    pub allow: Vec<String>,
    pub scenarios: Vec<Scenario>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PluginSpec {
    Path(PathBuf),
    Configured {
        path: PathBuf,
        #[serde(default)]
        config: BTreeMap<String, String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub user_profile: Object,
    pub turns: Vec<TurnSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSpec {
    /// What the user says.
    #[serde(default)]
    pub say: Option<String>,
    /// What the channel adds to the message (`entities`, `channel`, a
    /// tapped `payload`, a shared `location`, a submitted `form`, …).
    #[serde(default)]
    pub data: Object,
    /// Processing hints: `bypass_automation`, `expected_response_type`.
    #[serde(default)]
    pub hints: Hints,
    /// Instead of a message: let this much time pass, then deliver the
    /// timeout event.
    #[serde(default)]
    pub after_ms: Option<u64>,
    #[serde(default)]
    pub expect: Expect,
}

/// What a turn must have done; anything left out is not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The turn's messages, joined by newlines, exactly.
    pub reply: Option<String>,
    /// Text the reply must contain.
    pub reply_contains: Option<String>,
    /// The state the conversation is in after the turn.
    pub state: Option<String>,
    /// Slots that must hold these values (others may be set too).
    #[serde(default)]
    pub slots: Object,
    /// Variables that must hold these values.
    #[serde(default)]
    pub variables: Object,
    /// The intent routed on.
    pub intent: Option<String>,
    pub ended: Option<bool>,
    /// How many errors the turn may report (0 checks it had none).
    pub errors: Option<usize>,
    /// The flow a `trigger_flow` action of the turn asked for. `flow test`
    /// plays one flow and does not follow it.
    pub trigger_flow: Option<String>,
    /// Titles of the quick replies the turn's last message offers.
    pub quick_replies: Option<Vec<String>>,
    /// Actions the turn must have listed, as `kind:target`
    /// (`correction:size`, `no_match:1`, `cancel:route`, …).
    #[serde(default)]
    pub actions: Vec<String>,
    /// The reason the conversation is handed to a person.
    pub handoff: Option<String>,
}

/// A clock that moves only when a scenario says so; sleeps (retry backoff)
/// pass at once.
struct ScenarioClock(AtomicI64);

impl Clock for ScenarioClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    async fn sleep(&self, duration: Duration) {
        self.0
            .fetch_add(duration.as_millis() as i64, Ordering::SeqCst);
    }
}

/// How a run went.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub scenarios: usize,
    pub turns: usize,
    pub failed_turns: usize,
}

/// Reads a scenarios file, naming the path of whatever is wrong in it.
pub fn read_scenarios(path: &Path) -> Result<ScenarioFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let deserializer = &mut serde_json::Deserializer::from_str(&text);
    let file: ScenarioFile = serde_path_to_error::deserialize(deserializer)
        .map_err(|e| format!("{}: {}: {}", path.display(), e.path(), e.inner()))?;
    let problem = |at: String, what: &str| Err(format!("{}: {at}: {what}", path.display()));
    if file.scenarios.is_empty() {
        return problem("scenarios".into(), "there are none");
    }
    for (s, scenario) in file.scenarios.iter().enumerate() {
        if scenario.turns.is_empty() {
            return problem(format!("scenarios[{s}].turns"), "there are none");
        }
        for (t, turn) in scenario.turns.iter().enumerate() {
            let at = format!("scenarios[{s}].turns[{t}]");
            if turn.say.is_some() == turn.after_ms.is_some() {
                return problem(at, "give either `say` or `after_ms`");
            }
            if turn.after_ms.is_some() && !turn.data.is_empty() {
                return problem(at, "`data` goes with a message (`say`), not `after_ms`");
            }
        }
    }
    Ok(file)
}

/// Installs the plugins, plays every scenario and writes the report to
/// `out`.
pub async fn run(
    flow: &Flow,
    file: &ScenarioFile,
    base_dir: &Path,
    out: &mut String,
) -> Result<Summary, String> {
    let host = PluginHost::new(HostConfig {
        pooling: false,
        ..HostConfig::default()
    })
    .map_err(|e| format!("starting the plugin host: {e}"))?;
    let allow_list = AllowList::parse(&file.allow).map_err(|e| format!("allow: {e}"))?;
    host.set_policy(
        TENANT,
        TenantPolicy {
            allow_list,
            ..Default::default()
        },
    );
    for (name, spec) in &file.plugins {
        let (path, config) = match spec {
            PluginSpec::Path(path) => (path, BTreeMap::new()),
            PluginSpec::Configured { path, config } => (path, config.clone()),
        };
        let path = base_dir.join(path);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("plugins.{name}: {}: {e}", path.display()))?;
        host.install(TENANT, name, "test", &bytes, None, config)
            .await
            .map_err(|e| format!("plugins.{name}: {}: {e}", path.display()))?;
    }

    let clock = ScenarioClock(AtomicI64::new(START_MS));
    let machine = Machine::new(host, clock);
    let mut summary = Summary::default();
    for scenario in &file.scenarios {
        summary.scenarios += 1;
        machine.clock().0.store(START_MS, Ordering::SeqCst);
        let _ = writeln!(out, "scenario \"{}\"", scenario.name);
        let mut conversation = Conversation::new(
            TENANT,
            format!("scenario-{}", summary.scenarios),
            "tester",
            flow,
            START_MS,
        );
        conversation.user_profile = scenario.user_profile.clone();
        for (n, turn) in scenario.turns.iter().enumerate() {
            summary.turns += 1;
            let event = match (&turn.say, turn.after_ms) {
                (Some(text), _) => {
                    let mut event = Event::message(text).with_hints(turn.hints.clone());
                    for (key, value) in &turn.data {
                        event = event.with_data(key, value.clone());
                    }
                    event
                }
                (None, after) => {
                    machine
                        .clock()
                        .0
                        .fetch_add(after.unwrap_or(0) as i64, Ordering::SeqCst);
                    Event::timeout()
                }
            };
            let step = machine.step(flow, &mut conversation, &event).await;
            let problems = check(&turn.expect, &step, &conversation);
            let said = match &turn.say {
                Some(text) => format!("{text:?}"),
                None => format!("(after {} ms)", turn.after_ms.unwrap_or(0)),
            };
            let mark = if problems.is_empty() { "✓" } else { "✗" };
            let trigger = match &step.trigger_flow {
                Some(trigger) => format!(" (triggers flow {}, not followed)", trigger.flow_id),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {mark} turn {}: {said} → {}: {}{trigger}",
                n + 1,
                step.state,
                reply_of(&step).replace('\n', " / ")
            );
            for problem in &problems {
                let _ = writeln!(out, "      {problem}");
            }
            if !problems.is_empty() {
                summary.failed_turns += 1;
            }
        }
    }
    let _ = writeln!(
        out,
        "{} scenarios, {} turns: {} passed, {} failed",
        summary.scenarios,
        summary.turns,
        summary.turns - summary.failed_turns,
        summary.failed_turns
    );
    Ok(summary)
}

fn reply_of(step: &StepResult) -> String {
    step.messages
        .iter()
        .map(|m| m.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every way the turn differs from what was expected.
fn check(expect: &Expect, step: &StepResult, conversation: &Conversation) -> Vec<String> {
    let mut problems = Vec::new();
    let reply = reply_of(step);
    if let Some(wanted) = &expect.reply
        && *wanted != reply
    {
        problems.push(format!("reply: expected {wanted:?}, got {reply:?}"));
    }
    if let Some(part) = &expect.reply_contains
        && !reply.contains(part.as_str())
    {
        problems.push(format!(
            "reply: expected it to contain {part:?}, got {reply:?}"
        ));
    }
    if let Some(state) = &expect.state
        && *state != step.state
    {
        problems.push(format!("state: expected {state:?}, got {:?}", step.state));
    }
    for (what, wanted, actual) in [
        ("slots", &expect.slots, &conversation.slots),
        ("variables", &expect.variables, &conversation.variables),
    ] {
        for (name, value) in wanted {
            let found = actual.get(name).unwrap_or(&Value::Null);
            if found != value {
                problems.push(format!("{what}.{name}: expected {value}, got {found}"));
            }
        }
    }
    if let Some(intent) = &expect.intent {
        let routed = conversation.intent.as_ref().and_then(|i| i.name.as_deref());
        if routed != Some(intent.as_str()) {
            problems.push(format!("intent: expected {intent:?}, got {routed:?}"));
        }
    }
    if let Some(ended) = expect.ended
        && ended != step.ended
    {
        problems.push(format!("ended: expected {ended}, got {}", step.ended));
    }
    let triggered = step.trigger_flow.as_ref().map(|t| t.flow_id.as_str());
    if let Some(flow_id) = &expect.trigger_flow
        && triggered != Some(flow_id.as_str())
    {
        problems.push(format!(
            "trigger_flow: expected {flow_id:?}, got {triggered:?}"
        ));
    }
    if let Some(wanted) = &expect.quick_replies {
        let offered: Vec<&str> = step
            .messages
            .last()
            .map(|m| {
                m.rich
                    .quick_replies
                    .iter()
                    .map(|q| q.title.as_str())
                    .collect()
            })
            .unwrap_or_default();
        if offered != *wanted {
            problems.push(format!(
                "quick_replies: expected {wanted:?}, got {offered:?}"
            ));
        }
    }
    let labels: Vec<String> = step.actions.iter().map(|a| a.label()).collect();
    for action in &expect.actions {
        if !labels.contains(action) {
            problems.push(format!("actions: expected {action:?} among {labels:?}"));
        }
    }
    let handoff = step.handoff.as_ref().map(|h| h.reason.as_str());
    if let Some(reason) = &expect.handoff
        && handoff != Some(reason.as_str())
    {
        problems.push(format!("handoff: expected {reason:?}, got {handoff:?}"));
    }
    if let Some(errors) = expect.errors
        && errors != step.errors.len()
    {
        let found: Vec<String> = step.errors.iter().map(|e| e.message.clone()).collect();
        problems.push(format!(
            "errors: expected {errors}, got {}: {found:?}",
            step.errors.len()
        ));
    }
    problems
}
