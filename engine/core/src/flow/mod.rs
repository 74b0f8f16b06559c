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
pub use plugins::{PluginRef, is_plugin_name};
pub use report::{Issue, Report, Severity};
pub use validated::Flow;
