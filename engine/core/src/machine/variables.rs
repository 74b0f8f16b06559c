//! Writing the conversation's variables and slots by name, as mappings,
//! actions and plugins do.

use serde_json::Value;

use crate::context::Conversation;
use crate::model::Object;

/// Sets a variable, or a slot when the name is `slots.<name>`.
pub(super) fn assign(c: &mut Conversation, name: &str, value: Value) {
    match name.strip_prefix("slots.") {
        Some(slot) => c.slots.insert(slot.to_owned(), value),
        None => c.variables.insert(name.to_owned(), value),
    };
}

/// Applies a plugin's updates: `null` removes.
pub(super) fn apply_updates(c: &mut Conversation, updates: Object) {
    for (name, value) in updates {
        if value.is_null() {
            match name.strip_prefix("slots.") {
                Some(slot) => c.slots.shift_remove(slot),
                None => c.variables.shift_remove(&name),
            };
        } else {
            assign(c, &name, value);
        }
    }
}
