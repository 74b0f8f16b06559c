//! The engine's types to the WIT contract's, and back.

use mcp_flow::{Classification, Conversation, Entity, Event, EventKind, IntentScore};
use serde_json::Value;

use crate::bindings::types as wit;

pub fn conversation(c: &Conversation) -> wit::Conversation {
    wit::Conversation {
        tenant_id: c.tenant_id.clone(),
        conversation_id: c.conversation_id.clone(),
        user_id: c.user_id.clone(),
        flow_id: c.flow_id.clone(),
        flow_version: c.flow_version.clone(),
        current_state: c.current_state.clone(),
        slots: Value::Object(c.slots.clone()).to_string(),
        variables: Value::Object(c.variables.clone()).to_string(),
        user_profile: Value::Object(c.user_profile.clone()).to_string(),
        intent: c.intent.as_ref().and_then(|i| i.name.clone()),
        intent_history: c.intent_history.clone(),
        turn: c.turn,
    }
}

pub fn event(e: &Event) -> wit::Event {
    wit::Event {
        kind: match e.kind {
            EventKind::Message => wit::EventKind::Message,
            EventKind::Timeout => wit::EventKind::Timeout,
        },
        text: e.text.clone(),
        data: Value::Object(e.data.clone()).to_string(),
    }
}

/// A plugin's `effects`: updates must be a JSON object.
pub fn effects(e: wit::Effects) -> Result<(mcp_flow::model::Object, Vec<String>), String> {
    let updates = match e.updates.trim() {
        "" => mcp_flow::model::Object::new(),
        text => match serde_json::from_str(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Err("effects.updates must be a JSON object".into()),
            Err(err) => return Err(format!("effects.updates is not JSON: {err}")),
        },
    };
    Ok((updates, e.messages))
}

/// A classifier's analysis; an entity whose value is not JSON fails it.
pub fn classification(
    analysis: crate::bindings::entity_intent::exports::mcp::plugin::intent_entities::Analysis,
) -> Result<Classification, String> {
    let entities = analysis
        .entities
        .into_iter()
        .map(|e| {
            let value = serde_json::from_str(&e.value)
                .map_err(|err| format!("entity \"{}\": value is not JSON: {err}", e.name))?;
            Ok(Entity {
                name: e.name,
                value,
                confidence: e.confidence,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Classification {
        intents: intent_scores(analysis.intents),
        entities,
    })
}

pub fn intent_scores(scores: Vec<wit::IntentScore>) -> Vec<IntentScore> {
    scores
        .into_iter()
        .map(|s| IntentScore {
            intent: s.intent,
            confidence: s.confidence,
        })
        .collect()
}

/// Bytes of text a plugin returned, for the result-size limit.
pub fn effects_size(e: &wit::Effects) -> usize {
    e.updates.len() + e.messages.iter().map(String::len).sum::<usize>()
}
