//! MCP Engine's flow core: the flow model, its validator, and the state
//! machine that runs one conversation turn at a time.
//!
//! No I/O happens here. Plugins and time come in through the ports in
//! [`ports`]; storage and transport live in the outer crates.
//!
//! ```
//! use mcp_flow::{Conversation, Event, Flow, Machine, NoPlugins, SystemClock};
//!
//! let flow = Flow::from_json(r#"{
//!     "flow_id": "hello", "name": "Hello", "version": "1", "initial_state": "greet",
//!     "states": {
//!         "greet": { "type": "response",
//!                    "config": { "response_templates": { "default": "Hi {{ user.name | default('there') }}!" } },
//!                    "transitions": [ { "condition": "any_input", "target_state": "bye" } ] },
//!         "bye": { "type": "end", "config": { "message": "Bye." } }
//!     }
//! }"#).unwrap();
//! let machine = Machine::new(NoPlugins, SystemClock);
//! let mut conversation = Conversation::new("tenant", "c-1", "user", &flow, 0);
//! let turn = futures::executor::block_on(machine.step(&flow, &mut conversation, &Event::message("hello")));
//! assert_eq!(turn.messages[0].text, "Hi there!");
//! assert_eq!(turn.state, "bye");
//! ```

pub mod context;
pub mod experiment;
pub mod expr;
pub mod flow;
pub mod graph;
pub mod intent;
pub mod machine;
pub mod manifest;
pub mod model;
pub mod policy;
pub mod ports;
pub mod schema;
pub mod slots;
pub mod storage;
pub mod template;

mod clock;

pub use clock::SystemClock;
pub use context::{
    Conversation, ConversationStatus, Event, EventKind, Handoff, Hints, IntentResult, Unanswered,
};
pub use experiment::{ExperimentConfig, Variant};
pub use flow::{
    Flow, Issue, PluginRef, REMOTE_TOOL_PREFIX, Report, Severity, remote_tool, validate,
};
pub use intent::{Classification, Entity, IntentScore};
pub use machine::{ActionRecord, Machine, Message, StepResult, TurnError, TurnErrorKind};
pub use manifest::{Manifest, RateLimit, StateTypeManifest, ToolAnnotations, ToolManifest};
pub use model::{Button, ButtonKind, Card, FlowDefinition, Location, Media, QuickReply, Rich};
pub use policy::{LimitOverrides, PolicySettings, RemoteMcpServer};
pub use ports::{
    ActionOutput, Clock, NoPlugins, PluginCall, PluginError, PluginRuntime, PluginWorld,
    StateOutput,
};
pub use storage::{ContextError, ContextStore, ConversationKey, Lease, Snapshot, Write};
