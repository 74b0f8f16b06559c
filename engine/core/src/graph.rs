//! A flow as a Mermaid state diagram, for people reading or reviewing it.

use std::fmt::Write;

use crate::model::{FlowDefinition, StateConfig, Transition, TransitionCondition};

/// `stateDiagram-v2` source: one node per state (named by index, labelled
/// with its name and type, so any state name is safe), the initial arrow,
/// each transition labelled with its condition, and end states to `[*]`.
pub fn mermaid(flow: &FlowDefinition) -> String {
    let id = |name: &str| {
        flow.states
            .get_index_of(name)
            .map_or_else(|| "unknown".to_owned(), |i| format!("s{i}"))
    };
    let mut out = String::from("stateDiagram-v2\n");
    for (i, (name, state)) in flow.states.iter().enumerate() {
        let _ = writeln!(
            out,
            "    state \"{} ({})\" as s{i}",
            label(name),
            label(&state.type_name())
        );
    }
    let _ = writeln!(out, "    [*] --> {}", id(&flow.initial_state));
    for (name, state) in &flow.states {
        for transition in &state.transitions {
            let _ = writeln!(
                out,
                "    {} --> {} : {}",
                id(name),
                id(&transition.target_state),
                label(&condition(transition))
            );
        }
        if matches!(state.config, StateConfig::End(_)) {
            let _ = writeln!(out, "    {} --> [*]", id(name));
        }
    }
    out
}

fn condition(t: &Transition) -> String {
    let detail = match t.condition {
        TransitionCondition::Expression => t.expression.clone(),
        TransitionCondition::Plugin => t.plugin.clone(),
        _ => t.condition_value.clone(),
    };
    match detail {
        Some(detail) => format!("{} {detail}", t.condition.as_str()),
        None => t.condition.as_str().to_owned(),
    }
}

/// Mermaid labels end at a newline and treat `:` and quotes specially.
fn label(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '"' => '\'',
            ':' | ';' | '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flow;

    #[test]
    fn every_state_and_transition_is_drawn() {
        let flow =
            Flow::from_json(include_str!("../../../examples/flows/pizza_order.json")).unwrap();
        let diagram = mermaid(flow.definition());
        assert!(diagram.starts_with("stateDiagram-v2\n"));
        let definition = flow.definition();
        for (i, name) in definition.states.keys().enumerate() {
            assert!(
                diagram.contains(&format!("state \"{name} (")),
                "{name} missing"
            );
            assert!(diagram.contains(&format!("as s{i}\n")));
        }
        let transitions: usize = definition
            .states
            .values()
            .map(|s| s.transitions.len())
            .sum();
        assert_eq!(diagram.matches(" : ").count(), transitions);
        let initial = definition
            .states
            .get_index_of(&definition.initial_state)
            .unwrap();
        assert!(diagram.contains(&format!("[*] --> s{initial}\n")));
    }
}
