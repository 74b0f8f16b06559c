//! The plugin runtime flows run with: the plugin host, except that a tool
//! goes through [`Tools::execute`] like every other caller's.

use std::sync::Arc;

use mcp_flow::{ActionOutput, Classification, PluginCall, PluginError, PluginRuntime, StateOutput};
use mcp_store::ToolOutcome;
use serde_json::Value;

use crate::{Caller, ToolError, ToolRequest, Tools, Via};

#[derive(Clone)]
pub struct FlowRuntime {
    tools: Arc<Tools>,
}

impl FlowRuntime {
    pub fn new(tools: Arc<Tools>) -> FlowRuntime {
        FlowRuntime { tools }
    }
}

impl PluginRuntime for FlowRuntime {
    async fn evaluate_condition(&self, call: PluginCall<'_>) -> Result<bool, PluginError> {
        self.tools.host().evaluate_condition(call).await
    }

    async fn run_action(&self, call: PluginCall<'_>) -> Result<ActionOutput, PluginError> {
        self.tools.host().run_action(call).await
    }

    async fn call_tool(&self, call: PluginCall<'_>) -> Result<Value, PluginError> {
        let caller = Caller::Flow {
            conversation_id: call.conversation.conversation_id.clone(),
        };
        let executed = self
            .tools
            .execute(ToolRequest {
                tenant_id: call.tenant_id,
                tool: call.plugin,
                version: call.version,
                args: call.args,
                caller: &caller,
                via: Via::Flow,
                confirmed: true,
                timeout: call.timeout,
                conversation: Some(call.conversation),
            })
            .await;
        executed
            .result
            .map_err(|error| plugin_error(call.plugin, error))
    }

    async fn execute_state(&self, call: PluginCall<'_>) -> Result<StateOutput, PluginError> {
        self.tools.host().execute_state(call).await
    }

    async fn classify_intent(&self, call: PluginCall<'_>) -> Result<Classification, PluginError> {
        self.tools.host().classify_intent(call).await
    }
}

/// How a flow's error routing sees a refused or failed execution.
fn plugin_error(plugin: &str, error: ToolError) -> PluginError {
    if let Some(e) = error.plugin_error {
        return e;
    }
    let plugin = plugin.to_owned();
    match error.outcome {
        ToolOutcome::NotFound => PluginError::NotFound { plugin },
        // Worth a retry after the flow's backoff.
        ToolOutcome::RateLimited => PluginError::Busy {
            plugin,
            reason: error.message,
        },
        _ => PluginError::Rejected {
            plugin,
            reason: error.message,
        },
    }
}
