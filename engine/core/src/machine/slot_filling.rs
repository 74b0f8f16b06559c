//! Slot filling: taking slot values from a message, checking them against
//! their rules, and asking for the next missing one.

use serde_json::{Value, json};

use crate::context::{Conversation, SlotProgress};
use crate::model::SlotFillingConfig;
use crate::ports::{Clock, PluginRuntime};
use crate::slots::Rule;

use super::step_result::{Message, TurnErrorKind};
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
            (None, _) => self.say(c, name, prompt, "text"),
            (Some(_), Some(retry)) => self.say(c, name, retry, "text"),
            (Some(reason), None) => {
                self.result.messages.push(Message {
                    text: format!("Sorry, I need {reason}."),
                    response_type: "text".into(),
                    state: name.to_owned(),
                    delay_ms: None,
                    typing_indicator: true,
                });
                self.say(c, name, prompt, "text");
            }
        }
    }

    /// Fills slots from what the message offers unasked: the channel's
    /// entities, and values the extractors and rules find anywhere in it
    /// for open slots other than `asking` (the caller reads its answer).
    pub(super) fn read_slots(
        &mut self,
        c: &mut Conversation,
        name: &str,
        config: &SlotFillingConfig,
        asking: Option<&str>,
    ) {
        let (flow, event) = (self.flow, self.event);
        let text = event.text.as_str();
        let rule = |slot: &str| flow.rules.get(&(name.to_owned(), slot.to_owned()));
        let slots: Vec<&String> = config
            .required_slots
            .iter()
            .chain(&config.optional_slots)
            .collect();

        // A value offered for a slot, if its rule takes it.
        let accept = |slot: &str, value: &Value, c: &Conversation| match rule(slot) {
            Some(rule) => rule.accept(value, c).ok(),
            None => Some(value.clone()),
        };
        // Values the channel already extracted.
        if let Some(entities) = event.entities() {
            for slot in &slots {
                let value = entities.get(slot.as_str());
                if let Some(value) = value.and_then(|value| accept(slot, value, c)) {
                    c.slots.insert((*slot).clone(), value);
                }
            }
        }
        // Values the classifier found in this turn's message, for open slots.
        let classified = self.result.intent.as_ref().map(|i| &i.entities);
        for slot in &slots {
            let value = classified.and_then(|entities| entities.get(slot.as_str()));
            if c.slots.contains_key(slot.as_str()) {
                continue;
            }
            if let Some(value) = value.and_then(|value| accept(slot, value, c)) {
                c.slots.insert((*slot).clone(), value);
            }
        }
        // Values found anywhere in the message, for slots not yet filled.
        for slot in &slots {
            if c.slots.contains_key(slot.as_str()) || asking == Some(slot.as_str()) {
                continue;
            }
            let found = match config.extractors.get(slot.as_str()) {
                Some(pattern) => flow.regexes[pattern].captures(text).and_then(|captures| {
                    let raw = captures.get(1).or_else(|| captures.get(0))?.as_str();
                    match rule(slot) {
                        Some(rule) => rule.extract(raw, c).ok(),
                        None => Some(json!(raw)),
                    }
                }),
                None => rule(slot).and_then(|rule| rule.find_unprompted(text)),
            };
            if let Some(value) = found {
                c.slots.insert((*slot).clone(), value);
            }
        }
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
        self.read_slots(c, name, config, asking.as_deref());
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

/// The first required slot without a value.
pub(super) fn missing_slot(c: &Conversation, config: &SlotFillingConfig) -> Option<String> {
    config
        .required_slots
        .iter()
        .find(|slot| c.slots.get(slot.as_str()).is_none_or(Value::is_null))
        .cloned()
}
