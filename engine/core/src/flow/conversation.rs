//! Starting a conversation on a flow, starting it over, and moving it to
//! another flow: the parts of [`Conversation`] that read a [`Flow`].

use crate::context::{Conversation, ConversationStatus, Handoff, Unanswered};
use crate::model::Object;

use super::validated::Flow;

impl Conversation {
    /// A new conversation on `flow`, with the flow's initial variables.
    pub fn new(
        tenant_id: impl Into<String>,
        conversation_id: impl Into<String>,
        user_id: impl Into<String>,
        flow: &Flow,
        now_ms: i64,
    ) -> Conversation {
        let definition = flow.definition();
        Conversation {
            conversation_id: conversation_id.into(),
            tenant_id: tenant_id.into(),
            user_id: user_id.into(),
            flow_id: definition.flow_id.clone(),
            flow_version: definition.version.clone(),
            status: ConversationStatus::New,
            current_state: definition.initial_state.clone(),
            previous_states: Vec::new(),
            slots: Object::new(),
            variables: definition.variables.clone(),
            user_profile: Object::new(),
            intent: None,
            intent_history: Vec::new(),
            integration_results: Object::new(),
            error_count: 0,
            turn: 0,
            state_entered_at_ms: now_ms,
            unanswered: Unanswered {
                quiet_since_ms: now_ms,
                ..Unanswered::default()
            },
            handoff: None,
            clarifying: Vec::new(),
            interrupted: Vec::new(),
            slot_filling: None,
            state_outcome: None,
            ab_variant: None,
            plugin_versions: Default::default(),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    /// Back to the start of `flow`: slots, variables and per-state progress are
    /// cleared; the user's profile and the A/B variant are kept.
    pub fn restart(&mut self, flow: &Flow) {
        let definition = flow.definition();
        self.status = ConversationStatus::New;
        self.current_state = definition.initial_state.clone();
        self.slots.clear();
        self.variables = definition.variables.clone();
        self.intent = None;
        self.integration_results.clear();
        self.slot_filling = None;
        self.state_outcome = None;
        self.interrupted.clear();
    }

    /// Automation back on after a handoff: the next message runs the flow
    /// again, from where the conversation is (the start, if it ended).
    /// Returns the handoff that was lifted, if there was one.
    pub fn resume_automation(&mut self) -> Option<Handoff> {
        self.handoff.take()
    }

    /// Moves the conversation to another flow (a `trigger_flow` action):
    /// the next event enters `target_state`, or the flow's initial state.
    /// Slots, variables and the user's profile go along; variables the new
    /// flow declares and the conversation lacks get the flow's values.
    pub fn switch_flow(
        &mut self,
        flow: &Flow,
        target_state: Option<&str>,
        now_ms: i64,
    ) -> Result<(), String> {
        let definition = flow.definition();
        let target = target_state.unwrap_or(&definition.initial_state);
        if flow.state(target).is_none() {
            return Err(format!(
                "state \"{target}\" is not in flow {} {}",
                definition.flow_id, definition.version
            ));
        }
        if !self.current_state.is_empty() {
            self.previous_states
                .push(std::mem::take(&mut self.current_state));
        }
        self.flow_id = definition.flow_id.clone();
        self.flow_version = definition.version.clone();
        self.status = ConversationStatus::New;
        self.current_state = target.to_owned();
        for (name, value) in &definition.variables {
            self.variables
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.slot_filling = None;
        self.state_outcome = None;
        self.state_entered_at_ms = now_ms;
        self.unanswered = Unanswered {
            quiet_since_ms: now_ms,
            ..Unanswered::default()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_test_conversation_is_a_new_one_on_a_one_state_flow() {
        let flow = Flow::from_json(
            r#"{"flow_id":"f","name":"f","version":"1","initial_state":"end",
                "states":{"end":{"type":"end"}}}"#,
        )
        .unwrap();
        assert_eq!(
            crate::context::tests::blank_conversation(),
            Conversation::new("t", "c", "u", &flow, 0)
        );
    }
}
