//! The state machine: one event in, one turn of the conversation out.
//!
//! docs/flows.md "How a turn runs" is the tenant-facing description of what
//! this module does; keep the two in step.

mod actions;
mod global_handlers;
mod integrations;
mod slot_filling;
mod states;
mod step;
mod step_result;
mod transitions;
mod turn;
mod unanswered;
mod variables;

pub use step::Machine;
pub use step_result::{
    ActionRecord, FlowTrigger, LoggedEvent, Message, StepResult, TurnError, TurnErrorKind,
};
pub use transitions::next_deadline;
