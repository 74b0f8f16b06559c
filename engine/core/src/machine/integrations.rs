//! Calling a tool plugin for an integration state or a `call_integration`
//! action: mappings, timeout, retries, and the recorded result.

use std::time::Duration;

use futures::future::{Either, select};
use serde_json::{Value, json};

use crate::context::Conversation;
use crate::expr::Scope;
use crate::model::{Object, RetryConfig};
use crate::ports::{Clock, PluginError, PluginRuntime};

use super::turn::Turn;
use super::variables::assign;

/// One call to make: an integration state's, or a `call_integration` action's.
pub(super) struct IntegrationCall<'a> {
    pub(super) integration_id: &'a str,
    /// Arguments the request mapping may override (endpoint, method).
    pub(super) defaults: Object,
    pub(super) request_mapping: &'a indexmap::IndexMap<String, String>,
    pub(super) response_mapping: &'a indexmap::IndexMap<String, String>,
    pub(super) timeout_ms: u64,
    pub(super) retry: &'a RetryConfig,
}

impl<R: PluginRuntime, C: Clock> Turn<'_, R, C> {
    /// Seed 000 execute_integration: build the request from the mapping, call
    /// the tool with a timeout and retries, map the response into the
    /// conversation, and record the result under the integration's id.
    pub(super) async fn integrate(
        &mut self,
        c: &mut Conversation,
        state: &str,
        call: IntegrationCall<'_>,
    ) -> Result<(), String> {
        let flow = self.flow;
        let id = call.integration_id;
        let started = self.clock.now_ms();
        let mut request = call.defaults;
        for (key, source) in call.request_mapping {
            match flow.expr(source).eval(&Scope::new(c, Some(self.event))) {
                Ok(value) => {
                    request.insert(key.clone(), value);
                }
                Err(e) => {
                    let message = format!("request_mapping.{key}: {e}");
                    record_integration(c, id, Err(&message), 0, 0);
                    return Err(message);
                }
            }
        }
        let args = Value::Object(request);
        let timeout = Duration::from_millis(call.timeout_ms);
        let mut backoff = Duration::from_millis(call.retry.backoff_ms);
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            self.result.plugin_calls += 1;
            let plugin_call = self.call(c, id, &args, Some(self.event), call.timeout_ms);
            let tool = self.plugins.call_tool(plugin_call);
            let deadline = self.clock.sleep(timeout);
            futures::pin_mut!(tool, deadline);
            let outcome = match select(tool, deadline).await {
                Either::Left((outcome, _)) => outcome,
                Either::Right(((), _)) => Err(PluginError::Timeout {
                    plugin: id.to_owned(),
                    timeout_ms: call.timeout_ms,
                }),
            };
            match outcome {
                Err(e) if e.is_transient() && attempts < call.retry.max_attempts => {
                    tracing::debug!(state, integration = id, attempts, error = %e, "retrying");
                    self.clock.sleep(backoff).await;
                    backoff *= 2;
                }
                other => break other,
            }
        };
        let elapsed = self.clock.now_ms() - started;
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                let message = e.to_string();
                record_integration(c, id, Err(&message), attempts, elapsed);
                return Err(message);
            }
        };
        for (key, source) in call.response_mapping {
            let scope = Scope::new(c, Some(self.event)).with("result", &result);
            match flow.expr(source).eval(&scope) {
                Ok(value) => assign(c, key, value),
                Err(e) => {
                    let message = format!("response_mapping.{key}: {e}");
                    record_integration(c, id, Err(&message), attempts, elapsed);
                    return Err(message);
                }
            }
        }
        record_integration(c, id, Ok(result), attempts, elapsed);
        Ok(())
    }
}

fn record_integration(
    c: &mut Conversation,
    id: &str,
    outcome: Result<Value, &str>,
    attempts: u32,
    elapsed_ms: i64,
) {
    let record = match outcome {
        Ok(data) => {
            json!({ "success": true, "data": data, "attempts": attempts, "duration_ms": elapsed_ms })
        }
        Err(error) => {
            json!({ "success": false, "error": error, "attempts": attempts, "duration_ms": elapsed_ms })
        }
    };
    c.integration_results.insert(id.to_owned(), record);
}
