//! One message, end to end (DESIGN.md): lock the conversation, load or
//! create its context, choose the flow, step the machine with the tenant's
//! plugins, save under the lock, unlock, record the turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_flow::{
    ContextError, ContextStore, Conversation, ConversationKey, Event, Lease, Machine, Snapshot,
    StepResult, StoredFlow,
};
use mcp_store::{Analytics, Store, StoreError, TurnRecord};
use mcp_wasm::PluginHost;
use serde_json::{Value, json};

use crate::clock::TokioClock;
use crate::metrics::Metrics;

/// Why a turn or a query failed; the gRPC layer maps each to a status code.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the turn did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the engine is at MAX_PARALLEL_EXECUTIONS and no turn finished within {0:?}")]
    Busy(Duration),
}

/// What the engine needs to know beyond the message.
#[derive(Debug, Clone, Default)]
pub struct TurnRequest {
    pub tenant_id: String,
    pub conversation_id: String,
    pub user_id: String,
    pub text: String,
    pub data: serde_json::Map<String, Value>,
    /// `processing_hints.force_flow`: `flow_id` or `flow_id@version`.
    pub force_flow: Option<String>,
}

/// A finished turn.
#[derive(Debug)]
pub struct TurnOutcome {
    pub step: StepResult,
    pub conversation: Conversation,
    pub duration: Duration,
    pub lock_wait: Duration,
}

/// How the engine runs turns.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// STATE_EXECUTION_TIMEOUT_MS: the longest a turn may run.
    pub turn_timeout: Duration,
    /// MAX_PARALLEL_EXECUTIONS: turns running at once; more wait their turn.
    pub max_parallel: usize,
    /// ENABLE_AB_TESTING: new conversations are allocated to experiments.
    pub ab_testing: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            turn_timeout: Duration::from_secs(10),
            max_parallel: 100,
            ab_testing: true,
        }
    }
}

pub struct Engine {
    pub metrics: Arc<Metrics>,
    pub analytics: Analytics,
    store: Store,
    contexts: Arc<dyn ContextStore>,
    machine: Machine<PluginHost, TokioClock>,
    settings: EngineSettings,
    permits: tokio::sync::Semaphore,
}

impl Engine {
    pub fn new(
        store: Store,
        contexts: Arc<dyn ContextStore>,
        analytics: Analytics,
        settings: EngineSettings,
    ) -> Engine {
        let machine = Machine::new(store.host().clone(), TokioClock);
        Engine {
            metrics: Arc::new(Metrics::default()),
            analytics,
            store,
            contexts,
            machine,
            permits: tokio::sync::Semaphore::new(settings.max_parallel.max(1)),
            settings,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs one message through the conversation's flow, and counts it.
    pub async fn process(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        let started = Instant::now();
        let tenant = request.tenant_id.clone();
        // Everything the turn logs (plugin calls included) is inside this span.
        let span =
            tracing::info_span!("turn", tenant = %tenant, conversation = %request.conversation_id);
        let result =
            tracing::Instrument::instrument(self.process_uncounted(request), span.clone()).await;
        let metrics = &self.metrics;
        let outcome = match &result {
            Ok(outcome) if outcome.step.errors.is_empty() => "ok",
            Ok(_) => "turn_errors",
            Err(_) => "failed",
        };
        metrics.add(
            "mcp_turns_total",
            vec![("tenant", tenant.clone()), ("outcome", outcome.into())],
            1.0,
        );
        metrics.observe(
            "mcp_turn_duration_seconds",
            vec![("tenant", tenant.clone())],
            started.elapsed(),
        );
        if let Ok(outcome) = &result {
            metrics.observe(
                "mcp_lock_wait_seconds",
                vec![("tenant", tenant.clone())],
                outcome.lock_wait,
            );
            if outcome.step.plugin_calls > 0 {
                metrics.add(
                    "mcp_plugin_calls_total",
                    vec![("tenant", tenant.clone())],
                    f64::from(outcome.step.plugin_calls),
                );
            }
            for error in &outcome.step.errors {
                let kind = format!("{:?}", error.kind).to_lowercase();
                metrics.add(
                    "mcp_turn_errors_total",
                    vec![("tenant", tenant.clone()), ("kind", kind)],
                    1.0,
                );
            }
        }
        let _entered = span.enter();
        if let Ok(o) = &result {
            tracing::info!(
                conversation = %o.conversation.conversation_id,
                flow = %o.conversation.flow_id,
                version = %o.conversation.flow_version,
                states = ?o.step.visited,
                plugin_calls = o.step.plugin_calls,
                duration_ms = o.duration.as_millis() as u64,
                outcome,
                "turn"
            );
        }
        result
    }

    async fn process_uncounted(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        if request.conversation_id.trim().is_empty() {
            return Err(EngineError::Invalid {
                field: "conversation_id",
                message: "must not be empty".into(),
            });
        }
        let started = Instant::now();
        let wait = self.settings.turn_timeout;
        let _permit = tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| EngineError::Busy(wait))?
            .expect("the semaphore is never closed");
        let key = ConversationKey::new(&request.tenant_id, &request.conversation_id);
        let lease = self.contexts.lock(&key).await?;
        let result = self.locked_turn(&lease, &request, started).await;
        // A lease that expired releases nothing; any failure to unlock is
        // healed by the lock's time to live.
        if let Err(e) = self.contexts.unlock(lease.clone()).await {
            tracing::warn!(conversation = %key, error = %e, "unlock failed");
        }
        let mut outcome = result?;
        outcome.lock_wait = lease.waited;
        Ok(outcome)
    }

    async fn locked_turn(
        &self,
        lease: &Lease,
        request: &TurnRequest,
        started: Instant,
    ) -> Result<TurnOutcome, EngineError> {
        let tenant = request.tenant_id.as_str();
        let Snapshot {
            conversation,
            version,
        } = self.contexts.load(lease).await?;
        self.store.load_plugins(tenant).await?;
        let (flow, mut conversation) = match conversation {
            Some(conversation) => {
                let flow = self
                    .store
                    .published_flow(
                        tenant,
                        &conversation.flow_id,
                        Some(&conversation.flow_version),
                    )
                    .await?;
                (flow, conversation)
            }
            None => {
                let (flow, variant) = self.choose_flow(request).await?;
                let now = crate::grpc::now_ms();
                let mut conversation = Conversation::new(
                    tenant,
                    &request.conversation_id,
                    &request.user_id,
                    &flow.flow,
                    now,
                );
                conversation.flow_version = flow.version.clone();
                conversation.ab_variant = variant;
                // Pin the plugins too: publishing new versions never breaks
                // a conversation in flight.
                for (installed, active) in self.store.host().installed(tenant) {
                    if active {
                        conversation
                            .plugin_versions
                            .insert(installed.name.clone(), installed.version.clone());
                    }
                }
                (flow, conversation)
            }
        };
        let state_before = conversation.current_state.clone();
        let mut event = Event::message(&request.text);
        for (name, value) in &request.data {
            event = event.with_data(name, value.clone());
        }
        let received_at_ms = crate::grpc::now_ms();
        let timeout = self.settings.turn_timeout;
        let step = tokio::time::timeout(
            timeout,
            self.machine.step(&flow.flow, &mut conversation, &event),
        )
        .await
        .map_err(|_| EngineError::Timeout(timeout))?;
        self.contexts.save(lease, &conversation, version).await?;

        let duration = started.elapsed();
        let record = TurnRecord {
            conversation_id: conversation.conversation_id.clone(),
            started_at_ms: conversation.created_at_ms,
            turn: conversation.turn,
            flow_id: flow.flow_id.clone(),
            flow_version: flow.version.clone(),
            state_before,
            state_after: step.state.clone(),
            input: json!({ "text": request.text, "data": request.data }),
            output: serde_json::to_value(&step).unwrap_or(Value::Null),
            received_at_ms,
            duration_us: duration.as_micros() as u64,
        };
        // The turn happened; a transcript that cannot be written is logged,
        // not turned into a failed reply.
        if let Err(e) = self.store.record_turn(tenant, &record).await {
            tracing::warn!(tenant, conversation = %record.conversation_id, error = %e, "transcript not recorded");
        }
        let event = json!({
            "type": "turn",
            "tenant_id": tenant,
            "conversation_id": record.conversation_id,
            "turn": record.turn,
            "flow_id": record.flow_id,
            "flow_version": record.flow_version,
            "state_before": record.state_before,
            "state_after": record.state_after,
            "ended": step.ended,
            "errors": step.errors.len(),
            "ab_variant": conversation.ab_variant,
            "events": step.events,
            "received_at_ms": received_at_ms,
            "duration_us": record.duration_us,
        });
        self.analytics.publish(tenant, &event).await;
        Ok(TurnOutcome {
            step,
            conversation,
            duration,
            lock_wait: Duration::ZERO,
        })
    }

    /// A new conversation's flow: forced by the request, else the variant
    /// of a running experiment it is allocated to, else the tenant's
    /// default. Returns the variant's name with the flow.
    async fn choose_flow(
        &self,
        request: &TurnRequest,
    ) -> Result<(StoredFlow, Option<String>), EngineError> {
        let tenant = request.tenant_id.as_str();
        if let Some(forced) = request.force_flow.as_deref().filter(|f| !f.is_empty()) {
            let (flow_id, version) = match forced.split_once('@') {
                Some((id, version)) => (id, Some(version)),
                None => (forced, None),
            };
            return Ok((
                self.store.published_flow(tenant, flow_id, version).await?,
                None,
            ));
        }
        if self.settings.ab_testing {
            let now = chrono::Utc::now();
            for experiment in self.store.running_experiments(tenant).await?.iter() {
                let Some(variant) = experiment.allocate(&request.conversation_id, now) else {
                    continue;
                };
                let modifications = &variant.modifications;
                let Some(flow_id) = modifications.get("flow_id").and_then(Value::as_str) else {
                    continue;
                };
                let version = modifications.get("flow_version").and_then(Value::as_str);
                let flow = self.store.published_flow(tenant, flow_id, version).await?;
                return Ok((flow, Some(variant.name.clone())));
            }
        }
        Ok((self.store.default_flow(tenant).await?, None))
    }

    /// Each dependency's name, kind, round-trip time, and error if it failed.
    pub async fn probe_dependencies(
        &self,
    ) -> Vec<(&'static str, &'static str, Duration, Option<String>)> {
        let started = Instant::now();
        let database = sqlx_probe(&self.store).await;
        let database_time = started.elapsed();
        let started = Instant::now();
        let context = self
            .contexts
            .peek(&ConversationKey::new("health", "probe"))
            .await
            .err()
            .map(|e| e.to_string());
        vec![
            (
                "database",
                self.store.db().backend().to_string().leak(),
                database_time,
                database,
            ),
            ("context_store", "context", started.elapsed(), context),
        ]
    }

    /// The conversation as stored, without locking it.
    pub async fn conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Conversation, EngineError> {
        let key = ConversationKey::new(tenant_id, conversation_id);
        self.contexts.peek(&key).await?.conversation.ok_or_else(|| {
            EngineError::NotFound(format!("conversation {conversation_id} not found"))
        })
    }

    /// Forgets a conversation; returns the state it was in.
    pub async fn reset(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<String, EngineError> {
        let key = ConversationKey::new(tenant_id, conversation_id);
        let lease = self.contexts.lock(&key).await?;
        let result = async {
            let snapshot = self.contexts.load(&lease).await?;
            let previous = snapshot
                .conversation
                .map(|c| c.current_state)
                .ok_or_else(|| {
                    EngineError::NotFound(format!("conversation {conversation_id} not found"))
                })?;
            self.contexts.delete(&lease, snapshot.version).await?;
            Ok(previous)
        }
        .await;
        let _ = self.contexts.unlock(lease).await;
        result
    }
}

async fn sqlx_probe(store: &Store) -> Option<String> {
    store.ping().await.err().map(|e| e.to_string())
}
