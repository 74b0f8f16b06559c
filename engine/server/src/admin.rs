//! The admin API (proto/admin.proto): what tenants and operators do.

use std::time::Duration;

use mcp_registry::{PluginRegistry, UploadPlugin};
use mcp_store::{DurableWriter, PolicySettings, PublishOptions, Scope, Store};
use tonic::{Request, Response, Status};

use std::sync::Arc;

use mcp_tools::{Caller as ToolCaller, ToolRequest, Via};
use serde_json::Value;

use crate::auth::{Caller, authenticate, authorize, is_operator};
use crate::convert;
use crate::engine::Engine;
use crate::proto::admin::admin_server::Admin;
use crate::proto::admin::*;
use crate::request::require_conversation_id;
use crate::status::{from_engine, from_registry, from_store};

/// How long a transcript read waits for the turns queued before it.
const TRANSCRIPT_FLUSH_WAIT: Duration = Duration::from_secs(5);

pub struct AdminService {
    pub store: Store,
    /// Transcripts are read once the turns before the call are written.
    pub durable: DurableWriter,
    /// Uploads, plugin loads and tenant policies go through the host.
    pub plugins: PluginRegistry,
    /// MCP_ADMIN_KEY: the operator's key, for creating tenants.
    pub operator_key: Option<String>,
    /// Tool discovery and execution go through the engine's one path.
    pub engine: Arc<Engine>,
    /// How long ExecuteTool lets a tool run (STATE_EXECUTION_TIMEOUT_MS).
    pub tool_timeout: Duration,
}

impl AdminService {
    /// The caller's key, checked for the request's tenant and `scope`.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        tenant_id: &str,
        scope: Scope,
    ) -> Result<(), Status> {
        let key = authenticate(request)?;
        authorize(&key, tenant_id, scope)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_tenant(
        &self,
        request: Request<CreateTenantRequest>,
    ) -> Result<Response<CreateTenantResponse>, Status> {
        is_operator(&request, self.operator_key.as_deref())?;
        let request = request.into_inner();
        let policy = PolicySettings::try_from(&request)?;
        let id = Some(request.tenant_id.as_str()).filter(|id| !id.is_empty());
        let tenant = self
            .plugins
            .create_tenant(id, &request.name, policy)
            .await
            .map_err(from_registry)?;
        let issued = self
            .store
            .create_api_key(&tenant.id, "first key", &[Scope::Admin])
            .await
            .map_err(from_store)?;
        Ok(Response::new(CreateTenantResponse {
            tenant_id: tenant.id,
            name: tenant.name,
            api_key: Some(convert::api_key(issued.key, issued.token)),
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::Admin)
            .await?;
        let request = request.into_inner();
        let grants = convert::scopes(&request.scopes)?;
        let issued = self
            .store
            .create_api_key_granting(&request.tenant_id, &request.name, grants)
            .await
            .map_err(from_store)?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(convert::api_key(issued.key, issued.token)),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::Admin)
            .await?;
        let request = request.into_inner();
        self.store
            .revoke_api_key(&request.tenant_id, &request.key_id)
            .await
            .map_err(from_store)?;
        Ok(Response::new(RevokeApiKeyResponse {}))
    }

    async fn upload_plugin(
        &self,
        request: Request<UploadPluginRequest>,
    ) -> Result<Response<PluginVersion>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::PluginsWrite)
            .await?;
        let mut request = request.into_inner();
        let tenant = std::mem::take(&mut request.tenant_id);
        let stored = self
            .plugins
            .upload_plugin(&tenant, UploadPlugin::try_from(request)?)
            .await
            .map_err(from_registry)?;
        Ok(Response::new(stored.into()))
    }

    async fn list_plugins(
        &self,
        request: Request<ListPluginsRequest>,
    ) -> Result<Response<ListPluginsResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::PluginsWrite)
            .await?;
        let plugins = self
            .store
            .list_plugins(&request.get_ref().tenant_id)
            .await
            .map_err(from_store)?;
        Ok(Response::new(ListPluginsResponse {
            plugins: plugins.into_iter().map(PluginVersion::from).collect(),
        }))
    }

    async fn set_plugin_enabled(
        &self,
        request: Request<SetPluginEnabledRequest>,
    ) -> Result<Response<PluginVersion>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::PluginsWrite)
            .await?;
        let r = request.into_inner();
        let stored = self
            .store
            .set_plugin_enabled(&r.tenant_id, &r.name, &r.version, r.enabled)
            .await
            .map_err(from_store)?;
        Ok(Response::new(stored.into()))
    }

    async fn delete_plugin(
        &self,
        request: Request<DeletePluginRequest>,
    ) -> Result<Response<DeletePluginResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::PluginsWrite)
            .await?;
        let r = request.into_inner();
        self.store
            .delete_plugin_version(&r.tenant_id, &r.name, &r.version)
            .await
            .map_err(from_store)?;
        Ok(Response::new(DeletePluginResponse {}))
    }

    async fn list_tools(
        &self,
        request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::PluginsWrite)
            .await?;
        let tenant = &request.get_ref().tenant_id;
        let tools = self
            .engine
            .tenant_and_remote_tools(tenant)
            .await
            .map_err(from_engine)?
            .into_iter()
            .map(Tool::from)
            .collect();
        Ok(Response::new(ListToolsResponse { tools }))
    }

    async fn execute_tool(
        &self,
        request: Request<ExecuteToolRequest>,
    ) -> Result<Response<ExecuteToolResponse>, Status> {
        let caller = match request.extensions().get::<Caller>() {
            Some(Caller::Operator) if self.operator_key.is_some() => ToolCaller::Operator,
            _ => {
                let key = authenticate(&request)?;
                authorize(&key, &request.get_ref().tenant_id, Scope::ToolsCall)?;
                ToolCaller::Key(key)
            }
        };
        let r = request.into_inner();
        if r.tool.trim().is_empty() {
            return Err(Status::invalid_argument("tool: must not be empty"));
        }
        let args = r
            .arguments
            .as_ref()
            .map_or_else(|| Value::Object(Default::default()), convert::from_struct);
        let executed = self
            .engine
            .execute_tool(ToolRequest {
                tenant_id: &r.tenant_id,
                tool: &r.tool,
                version: None,
                args: &args,
                caller: &caller,
                via: Via::Grpc,
                confirmed: r.confirmed,
                timeout: self.tool_timeout,
                conversation: None,
            })
            .await
            .map_err(from_engine)?;
        Ok(Response::new(executed.into()))
    }

    async fn list_tool_calls(
        &self,
        request: Request<ListToolCallsRequest>,
    ) -> Result<Response<ListToolCallsResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::Admin)
            .await?;
        let r = request.into_inner();
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(10_000)
        };
        // Executions are written behind their answers.
        let _ = tokio::time::timeout(TRANSCRIPT_FLUSH_WAIT, self.engine.tools().audit().flushed())
            .await;
        let tool = Some(r.tool.as_str()).filter(|t| !t.is_empty());
        let calls = self
            .store
            .tool_calls(&r.tenant_id, tool, limit)
            .await
            .map_err(from_store)?;
        Ok(Response::new(ListToolCallsResponse {
            calls: calls.into_iter().map(ToolCall::from).collect(),
        }))
    }

    async fn publish_flow(
        &self,
        request: Request<PublishFlowRequest>,
    ) -> Result<Response<FlowVersion>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        let options = PublishOptions::from(&r);
        let stored = self
            .store
            .publish_flow(&r.tenant_id, &r.definition, options)
            .await
            .map_err(from_store)?;
        Ok(Response::new(stored.into()))
    }

    async fn list_flow_versions(
        &self,
        request: Request<ListFlowVersionsRequest>,
    ) -> Result<Response<ListFlowVersionsResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        let flow_id = Some(r.flow_id.as_str()).filter(|f| !f.is_empty());
        let versions = self
            .store
            .list_flow_versions(&r.tenant_id, flow_id)
            .await
            .map_err(from_store)?;
        Ok(Response::new(ListFlowVersionsResponse {
            versions: versions.into_iter().map(FlowVersion::from).collect(),
        }))
    }

    async fn get_flow_version(
        &self,
        request: Request<GetFlowVersionRequest>,
    ) -> Result<Response<FlowVersion>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        let stored = self
            .store
            .flow_version(&r.tenant_id, &r.flow_id, &r.version)
            .await
            .map_err(from_store)?;
        Ok(Response::new(stored.into()))
    }

    async fn set_default_flow(
        &self,
        request: Request<SetDefaultFlowRequest>,
    ) -> Result<Response<SetDefaultFlowResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        self.store
            .set_default_flow(&r.tenant_id, &r.flow_id)
            .await
            .map_err(from_store)?;
        Ok(Response::new(SetDefaultFlowResponse {}))
    }

    async fn create_experiment(
        &self,
        request: Request<CreateExperimentRequest>,
    ) -> Result<Response<Experiment>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        let config = convert::experiment_config(&r.config)?;
        let stored = self
            .store
            .create_experiment(&r.tenant_id, config)
            .await
            .map_err(from_store)?;
        Ok(Response::new(stored.into()))
    }

    async fn list_experiments(
        &self,
        request: Request<ListExperimentsRequest>,
    ) -> Result<Response<ListExperimentsResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let experiments = self
            .store
            .list_experiments(&request.get_ref().tenant_id)
            .await
            .map_err(from_store)?;
        Ok(Response::new(ListExperimentsResponse {
            experiments: experiments.into_iter().map(Experiment::from).collect(),
        }))
    }

    async fn stop_experiment(
        &self,
        request: Request<StopExperimentRequest>,
    ) -> Result<Response<Experiment>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::FlowsWrite)
            .await?;
        let r = request.into_inner();
        self.store
            .stop_experiment(&r.tenant_id, &r.experiment_id)
            .await
            .map_err(from_store)?;
        let stopped = self
            .store
            .list_experiments(&r.tenant_id)
            .await
            .map_err(from_store)?
            .into_iter()
            .find(|e| e.config.experiment_id == r.experiment_id)
            .ok_or_else(|| Status::not_found("experiment"))?;
        Ok(Response::new(stopped.into()))
    }

    async fn resume_conversation(
        &self,
        request: Request<ResumeConversationRequest>,
    ) -> Result<Response<ResumeConversationResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::Messages)
            .await?;
        let r = request.into_inner();
        require_conversation_id(&r.conversation_id)?;
        let handoff = self
            .engine
            .resume_automation(&r.tenant_id, &r.conversation_id)
            .await
            .map_err(from_engine)?;
        Ok(Response::new(ResumeConversationResponse {
            handoff_reason: handoff.reason,
            handoff_state: handoff.state,
            handed_off_at_ms: handoff.since_ms,
        }))
    }

    async fn get_transcript(
        &self,
        request: Request<GetTranscriptRequest>,
    ) -> Result<Response<GetTranscriptResponse>, Status> {
        self.authorize(&request, &request.get_ref().tenant_id, Scope::Messages)
            .await?;
        let r = request.into_inner();
        require_conversation_id(&r.conversation_id)?;
        let limit = if r.limit == 0 {
            100
        } else {
            r.limit.min(10_000)
        };
        // Turns are written behind their replies: a reader gets every turn
        // answered before it asked. (With the database away the read below
        // fails at once; the queue would not drain meanwhile.)
        if self.store.db().is_available() {
            tokio::time::timeout(TRANSCRIPT_FLUSH_WAIT, self.durable.flush())
                .await
                .map_err(|_| {
                    Status::unavailable("the transcript's latest turns are not yet in the database")
                })?;
        }
        let turns = self
            .store
            .transcript(&r.tenant_id, &r.conversation_id, limit)
            .await
            .map_err(from_store)?;
        Ok(Response::new(GetTranscriptResponse {
            turns: turns.into_iter().map(Turn::from).collect(),
        }))
    }
}
