//! Slot filling: taking slot values from a message, checking them against
//! their rules, and asking for the next missing one.

use serde_json::{Value, json};

use crate::context::{Conversation, SlotProgress};
use crate::flow::Flow;
use crate::model::SlotFillingConfig;
use crate::ports::{Clock, PluginRuntime};
use crate::slots::Rule;

use super::global_handlers::says;
use super::step_result::TurnErrorKind;
use super::turn::{Handled, Turn};

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Sends the prompt for `slot`, or its retry prompt after a bad answer.
    pub(super) fn ask(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
        slot: &str,
        invalid: Option<String>,
    ) {
        if let Some(progress) = c.slot_filling.as_mut() {
            progress.asking = Some(slot.to_owned());
        }
        let Some(prompt) = config.prompts.get(slot) else {
            return;
        };
        match (invalid, config.retry_prompts.get(slot)) {
            (None, _) => self.prompt(c, name, prompt),
            (Some(_), Some(retry)) => self.say(c, name, retry, "text"),
            (Some(reason), None) => {
                self.push_text(name, format!("Sorry, I need {reason}."));
                self.prompt(c, name, prompt);
            }
        }
    }

    /// Fills slots from what the message offers unasked: the channel's and
    /// the classifier's entities, and values the extractors and rules find
    /// anywhere in it, for slots other than `asking` (the caller reads its
    /// answer; the channel's entity for it counts too). A new value for a
    /// slot already filled — one of the state's, or one its `corrections`
    /// name — changes it: those slots are returned.
    pub(super) fn read_slots(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
        asking: Option<&str>,
    ) -> Vec<String> {
        let (flow, event) = (self.flow, self.event);
        let text = event.text.as_str();
        let channel = event.entities();
        let classified = self.result.intent.as_ref().map(|i| &i.entities);
        let others = config.corrections.iter().flat_map(|c| &c.slots);
        let slots: Vec<&String> = config
            .required_slots
            .iter()
            .chain(&config.optional_slots)
            .chain(others)
            .collect();
        let mut corrected = Vec::new();
        for slot in slots {
            let rule = rule_for(flow, name, slot);
            // A value offered for the slot, if its rule takes it.
            let accept = |value: &Value| match rule {
                Some(rule) => rule.accept(value, c).ok(),
                None => Some(value.clone()),
            };
            let from_channel = channel.and_then(|e| e.get(slot.as_str())).and_then(accept);
            let offered = if asking == Some(slot.as_str()) {
                from_channel
            } else {
                from_channel
                    .or_else(|| {
                        classified
                            .and_then(|e| e.get(slot.as_str()))
                            .and_then(accept)
                    })
                    .or_else(|| match config.extractors.get(slot.as_str()) {
                        Some(pattern) => flow.regexes[pattern].captures(text).and_then(|found| {
                            let raw = found.get(1).or_else(|| found.get(0))?.as_str();
                            match rule {
                                Some(rule) => rule.extract(raw, c).ok(),
                                None => Some(json!(raw)),
                            }
                        }),
                        None => rule.and_then(|rule| rule.find_unprompted(text)),
                    })
            };
            let Some(value) = offered else {
                continue;
            };
            match c.slots.get(slot.as_str()) {
                Some(old) if *old == value => {}
                Some(old) if !old.is_null() => {
                    c.slots.insert(slot.clone(), value);
                    corrected.push(slot.clone());
                }
                _ => {
                    c.slots.insert(slot.clone(), value);
                }
            }
        }
        corrected
    }

    /// Seed 000 handle_slot_filling: extract, validate, store, ask for the next.
    pub(super) fn fill_slots(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
    ) -> Handled {
        let (flow, event) = (self.flow, self.event);
        let text = event.text.as_str();
        let rule = |slot: &str| flow.rules.get(&(name.to_owned(), slot.to_owned()));
        let asking = c
            .slot_filling
            .get_or_insert(SlotProgress {
                asking: None,
                retries: 0,
            })
            .asking
            .clone();
        if let Some(cancel) = &config.cancel
            && says(
                flow,
                text,
                &cancel.phrases,
                &cancel.patterns,
                cancel.intent.as_ref(),
            )
        {
            for slot in config.required_slots.iter().chain(&config.optional_slots) {
                c.slots.remove(slot);
            }
            self.record(name, "cancel", &cancel.target_state);
            if let Some(response) = &cancel.response {
                self.say(c, name, response, "text");
            }
            return Handled::Goto(cancel.target_state.clone());
        }
        let corrected = self.read_slots(c, name, config, asking.as_deref());
        if !corrected.is_empty() {
            // The message was a correction, not an answer: say so, then
            // compute again what depends on it, or ask again.
            for slot in &corrected {
                self.record(name, "correction", slot);
            }
            let corrections = config.corrections.clone().unwrap_or_default();
            if let Some(response) = &corrections.response {
                self.say(c, name, response, "text");
            }
            if let Some(target) = corrections.target_state {
                return Handled::Goto(target);
            }
            if let Some(slot) = missing_slot(c, config) {
                self.ask(c, name, config, &slot, None);
                return Handled::Stay;
            }
            return Handled::Evaluate { failed: false };
        }
        // The answer to the question asked.
        let mut invalid = None;
        if let Some(slot) = asking.as_deref()
            && !c.slots.contains_key(slot)
        {
            let extracted = match (config.extractors.get(slot), rule(slot)) {
                (Some(pattern), rule) => match flow.regexes[pattern].captures(text) {
                    Some(captures) => {
                        let raw = captures
                            .get(1)
                            .or_else(|| captures.get(0))
                            .map_or("", |m| m.as_str());
                        rule.map_or(Ok(json!(raw)), |rule| rule.extract(raw, c))
                    }
                    None => Err(rule.map_or("an answer".to_owned(), Rule::describe)),
                },
                (None, Some(rule)) => rule.extract(text, c),
                (None, None) => Rule::Text.extract(text, c),
            };
            match extracted {
                Ok(value) => {
                    c.slots.insert(slot.to_owned(), value);
                }
                Err(reason) => {
                    tracing::debug!(state = %name, slot, %reason, "slot answer rejected");
                    invalid = Some(rule(slot).map_or("an answer".to_owned(), Rule::describe));
                }
            }
        }

        let progress = c.slot_filling.as_mut().expect("set above");
        if invalid.is_some() {
            progress.retries += 1;
        } else {
            progress.retries = 0;
        }
        if progress.retries >= config.max_retries {
            let slot = asking.clone().unwrap_or_default();
            self.error(
                TurnErrorKind::SlotRetriesExhausted,
                name,
                format!(
                    "no valid answer for slot \"{slot}\" after {} tries",
                    config.max_retries
                ),
            );
            let fallback = config.fallback_state.as_deref().or(self.recovery());
            if let Some(target) = fallback {
                return Handled::Goto(target.to_owned());
            }
            // Nowhere to go: start the count again and keep asking.
            progress.retries = 0;
            invalid = None;
        }
        match missing_slot(c, config) {
            None => {
                c.slot_filling = Some(SlotProgress {
                    asking: None,
                    retries: 0,
                });
                Handled::Evaluate { failed: false }
            }
            Some(slot) => {
                let invalid = invalid.filter(|_| asking.as_deref() == Some(slot.as_str()));
                self.ask(c, name, config, &slot, invalid);
                Handled::Stay
            }
        }
    }
}

/// The rule for `slot`: the state's own, else that of the first state that
/// asks for it (a slot corrected here but filled elsewhere).
fn rule_for<'f>(flow: &'f Flow, state: &str, slot: &str) -> Option<&'f Rule> {
    let key = |state: &str| (state.to_owned(), slot.to_owned());
    flow.rules.get(&key(state)).or_else(|| {
        flow.definition()
            .states
            .keys()
            .find_map(|other| flow.rules.get(&key(other)))
    })
}

/// The first required slot without a value.
pub(super) fn missing_slot(c: &Conversation, config: &SlotFillingConfig) -> Option<String> {
    config
        .required_slots
        .iter()
        .find(|slot| c.slots.get(slot.as_str()).is_none_or(Value::is_null))
        .cloned()
}
