//! Finding cycles of states that a turn could run around forever, without
//! ever waiting for the user.

use std::collections::HashMap;

use crate::model::{FlowDefinition, StateConfig};

/// Whether a state hands control back to the user as soon as it is entered.
fn waits_on_entry(config: &StateConfig) -> bool {
    matches!(
        config,
        StateConfig::Intent(_)
            | StateConfig::SlotFilling(_)
            | StateConfig::Wait(_)
            | StateConfig::Custom { .. }
    )
}

/// Cycles of states that can follow each other within one turn without
/// input: through states that do not wait on entry, by transitions that do
/// not need an event. Each cycle is listed once, starting at its first state
/// in the flow's order.
pub(super) fn automatic_cycles(d: &FlowDefinition) -> Vec<Vec<String>> {
    let names: Vec<&String> = d.states.keys().collect();
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let edges: Vec<Vec<usize>> = d
        .states
        .values()
        .map(|state| {
            if waits_on_entry(&state.config) {
                return Vec::new();
            }
            state
                .transitions
                .iter()
                .filter(|t| !t.condition.needs_event())
                .filter_map(|t| index.get(t.target_state.as_str()).copied())
                .collect()
        })
        .collect();
    // Tarjan's strongly connected components; any with a cycle is reported.
    struct Tarjan<'e> {
        edges: &'e [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.edges[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                self.components.push(component);
            }
        }
    }
    let n = names.len();
    let mut tarjan = Tarjan {
        edges: &edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if tarjan.index[v].is_none() {
            tarjan.visit(v);
        }
    }
    let mut cycles: Vec<Vec<String>> = tarjan
        .components
        .into_iter()
        .filter(|c| c.len() > 1 || edges[c[0]].contains(&c[0]))
        .map(|mut c| {
            c.sort_unstable();
            let mut names: Vec<String> = c.iter().map(|&i| names[i].clone()).collect();
            names.push(names[0].clone());
            names
        })
        .collect();
    cycles.sort();
    cycles
}
