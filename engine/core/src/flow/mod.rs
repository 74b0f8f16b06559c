//! Reading a flow, validating it, and compiling what the machine needs
//! (expressions, templates, rules, intents) once, before the first turn.

mod compile;
mod conversation;
mod cycles;
mod parse;
mod plugins;
mod report;
mod validated;

pub use parse::validate;
pub use plugins::{PluginRef, REMOTE_TOOL_PREFIX, is_plugin_name, remote_tool};
pub use report::{Issue, Report, Severity};
pub use validated::Flow;
