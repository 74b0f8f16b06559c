//! One message, end to end (docs/architecture.md): lock the conversation and
//! load its context (one round trip), or create it, choose the flow, step the
//! machine with the tenant's plugins, commit and unlock (one round trip); the
//! durable copy, transcript and analytics follow behind the reply.
//!
//! A turn has one deadline, the smaller of STATE_EXECUTION_TIMEOUT_MS and the
//! client's, for all of it: the permit, the lock, the step, a trigger_flow.
//! Its lease is renewed while it runs and a turn that loses it stops.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_flow::machine::{FlowTrigger, next_deadline};
use mcp_flow::{
    ContextError, ContextStore, Conversation, ConversationKey, Event, EventKind, Handoff, Hints,
    Lease, Machine, StepResult, TurnError, TurnErrorKind, Write,
};
use mcp_registry::{PluginRegistry, RegistryError};
use mcp_store::{
    Analytics, CacheUse, DurableWriter, Reservation, Store, StoreError, StoredFlow, TurnRecord,
    TurnWrite, Wakeups, track_cache,
};
use mcp_tools::{Executed, FlowRuntime, ToolListing, ToolRequest, Tools};
use mcp_wasm::{CallRecord, record_calls};
use serde_json::{Value, json};

use crate::clock::TokioClock;
use crate::gate::{GatePermit, PriorityGate};
use crate::metrics::{DataPathFigures, Metrics};

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
    /// The conversation is not in the state the call needs.
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Plugins(#[from] RegistryError),
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
    /// What the channel knows of the user; merged into the conversation's
    /// profile before the turn.
    pub user_profile: serde_json::Map<String, Value>,
    /// `processing_hints.force_flow`: `flow_id` or `flow_id@version`.
    pub force_flow: Option<String>,
    /// `processing_hints` the machine reads: bypass_automation,
    /// expected_response_type.
    pub hints: Hints,
    /// `processing_hints.priority`, 0 (none) to 5 (critical): the order in
    /// which turns waiting for an execution slot get one.
    pub priority: u8,
    /// `processing_hints.bypass_cache`: the tenant's flows are read again.
    pub bypass_cache: bool,
    /// `processing_hints.require_human_review`: the reply is marked for a
    /// person to review, in the response, transcript and analytics.
    pub review: bool,
    /// The client's deadline (`grpc-timeout`): the turn answers before it,
    /// with DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED if it must.
    pub deadline: Option<Instant>,
}

/// Largest user profile a conversation keeps, as JSON.
pub const MAX_PROFILE_BYTES: usize = 32 * 1024;

/// How long before the client's deadline a turn gives up, so that it
/// answers (and unlocks the conversation) before the client stops waiting.
const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// A finished turn.
#[derive(Debug)]
pub struct TurnOutcome {
    pub step: StepResult,
    pub conversation: Conversation,
    pub duration: Duration,
    pub lock_wait: Duration,
    /// Every plugin call the turn made, with its fuel and outcome.
    pub calls: Vec<CallRecord>,
    /// Whether the flow and plugins came from this process's caches.
    pub cache: CacheUse,
}

impl TurnOutcome {
    pub fn fuel_used(&self) -> u64 {
        self.calls.iter().map(|c| c.fuel_used).sum()
    }
}

/// A timeout turn, which no client asked for: streams of its conversation
/// on this process are told (see `stream::stream_session`).
#[derive(Debug, Clone)]
pub struct TimeoutTurn {
    pub key: ConversationKey,
    pub state_before: String,
    pub step: StepResult,
}

/// How the engine runs turns.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// STATE_EXECUTION_TIMEOUT_MS: the longest a turn may run.
    pub turn_timeout: Duration,
    /// MAX_PARALLEL_EXECUTIONS: turns running at once; more wait their turn.
    pub max_parallel: usize,
    /// TENANT_MAX_PARALLEL: turns of one tenant running at once, so that
    /// one tenant's load leaves the rest of MAX_PARALLEL_EXECUTIONS to the
    /// others. Default: half of it (at least 1).
    pub tenant_max_parallel: usize,
    /// ENABLE_AB_TESTING: new conversations are allocated to experiments.
    pub ab_testing: bool,
    /// CONVERSATION_IDLE_TTL_SECONDS: a durable copy older than this is not
    /// resumed (the context store forgot it for idling, not by accident).
    pub idle_ttl: Option<Duration>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            turn_timeout: Duration::from_secs(10),
            max_parallel: 100,
            tenant_max_parallel: 50,
            ab_testing: true,
            idle_ttl: None,
        }
    }
}

/// Where a turn's data goes: the live context, the durable copy and
/// transcript behind it, analytics, and wait-state deadlines.
pub struct DataPath {
    pub contexts: Arc<dyn ContextStore>,
    pub durable: DurableWriter,
    pub analytics: Analytics,
    pub wakeups: Wakeups,
}

pub struct Engine {
    pub metrics: Arc<Metrics>,
    pub analytics: Analytics,
    pub wakeups: Wakeups,
    pub durable: DurableWriter,
    /// Timeout turns run by this process, for streams to pass on.
    pub timeouts: tokio::sync::broadcast::Sender<Arc<TimeoutTurn>>,
    store: Store,
    plugins: PluginRegistry,
    contexts: Arc<dyn ContextStore>,
    machine: Machine<FlowRuntime, TokioClock>,
    tools: Arc<Tools>,
    settings: EngineSettings,
    permits: PriorityGate,
    /// Each tenant's share of the permits (TENANT_MAX_PARALLEL), by tenant.
    tenant_permits: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Engine {
    pub fn new(
        plugins: PluginRegistry,
        data: DataPath,
        settings: EngineSettings,
        tools: Arc<Tools>,
    ) -> Engine {
        let machine = Machine::new(FlowRuntime::new(tools.clone()), TokioClock);
        Engine {
            metrics: Arc::new(Metrics::default()),
            analytics: data.analytics,
            wakeups: data.wakeups,
            durable: data.durable,
            timeouts: tokio::sync::broadcast::channel(256).0,
            store: plugins.store().clone(),
            plugins,
            contexts: data.contexts,
            machine,
            tools,
            permits: PriorityGate::new(settings.max_parallel.max(1)),
            tenant_permits: Mutex::new(HashMap::new()),
            settings,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn tools(&self) -> &Arc<Tools> {
        &self.tools
    }

    pub fn plugins(&self) -> &PluginRegistry {
        &self.plugins
    }

    /// A tenant's tools, its plugins loaded first if this process has not.
    pub async fn tenant_tools(&self, tenant_id: &str) -> Result<Vec<ToolListing>, EngineError> {
        self.plugins.load_plugins(tenant_id).await?;
        Ok(self.tools.list(tenant_id))
    }

    /// A tenant's tools and its remote MCP servers' tools (which only its
    /// flows may call).
    pub async fn tenant_and_remote_tools(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<ToolListing>, EngineError> {
        let mut tools = self.tenant_tools(tenant_id).await?;
        tools.extend(self.tools.list_remote(tenant_id).await);
        Ok(tools)
    }

    /// Runs a tool for an agent (MCP, seed 002, ExecuteTool), the tenant's
    /// plugins loaded first if this process has not.
    pub async fn execute_tool(&self, request: ToolRequest<'_>) -> Result<Executed, EngineError> {
        self.plugins.load_plugins(request.tenant_id).await?;
        Ok(self.tools.execute(request).await)
    }

    /// Runs one message through the conversation's flow, and counts it.
    ///
    /// The turn runs in a task of its own: a caller that stops waiting (a
    /// client past its deadline, a closed stream) does not cut it off
    /// between lock and unlock, which would leave the conversation locked
    /// until the lock's time to live.
    pub async fn process(
        self: &Arc<Self>,
        request: TurnRequest,
    ) -> Result<TurnOutcome, EngineError> {
        let engine = self.clone();
        detached(async move { engine.process_counted(request).await }).await
    }

    async fn process_counted(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        let started = Instant::now();
        let tenant = request.tenant_id.clone();
        // Everything the turn logs (plugin calls included) is inside this span.
        let span =
            tracing::info_span!("turn", tenant = %tenant, conversation = %request.conversation_id);
        let ((result, cache), calls) = record_calls(track_cache(tracing::Instrument::instrument(
            self.process_uncounted(request),
            span.clone(),
        )))
        .await;
        self.count_plugin_calls(&tenant, &calls);
        let result = result.map(|mut outcome| {
            outcome.calls = calls;
            outcome.cache = cache;
            outcome
        });
        let metrics = &self.metrics;
        let outcome = match &result {
            Ok(outcome) if outcome.step.errors.is_empty() => "ok",
            Ok(_) => "turn_errors",
            Err(_) => "failed",
        };
        metrics.turns.with_label_values(&[&tenant, outcome]).inc();
        metrics
            .turn_duration
            .with_label_values(&[&tenant])
            .observe(started.elapsed().as_secs_f64());
        if let Ok(outcome) = &result {
            metrics
                .lock_wait
                .with_label_values(&[&tenant])
                .observe(outcome.lock_wait.as_secs_f64());
            self.count_turn_errors(&tenant, &outcome.step);
        }
        let _entered = span.enter();
        if let Ok(o) = &result {
            tracing::info!(
                conversation = %o.conversation.conversation_id,
                flow = %o.conversation.flow_id,
                version = %o.conversation.flow_version,
                states = ?o.step.visited,
                plugins = ?o.calls.iter().map(|c| c.plugin.as_str()).collect::<Vec<_>>(),
                fuel_used = o.fuel_used(),
                cache = o.cache.as_str(),
                duration_ms = o.duration.as_millis() as u64,
                outcome,
                "turn"
            );
        }
        result
    }

    fn count_plugin_calls(&self, tenant: &str, calls: &[CallRecord]) {
        let metrics = &self.metrics;
        for call in calls {
            let labels = [tenant, call.plugin.as_str()];
            let outcome = call.error.unwrap_or("ok");
            metrics
                .plugin_calls
                .with_label_values(&[tenant, &call.plugin, outcome])
                .inc();
            if call.error.is_some() {
                metrics.plugin_errors.with_label_values(&labels).inc();
            }
            metrics
                .plugin_fuel
                .with_label_values(&labels)
                .inc_by(call.fuel_used);
            metrics
                .plugin_call_duration
                .with_label_values(&labels)
                .observe(call.duration.as_secs_f64());
        }
    }

    fn count_turn_errors(&self, tenant: &str, step: &StepResult) {
        for error in &step.errors {
            let kind = format!("{:?}", error.kind).to_lowercase();
            self.metrics
                .turn_errors
                .with_label_values(&[tenant, &kind])
                .inc();
        }
    }

    /// When a turn starting now must be done: the turn timeout, or the
    /// client's deadline (less a margin to answer in) if that comes first.
    fn deadline(&self, client: Option<Instant>) -> Instant {
        let own = Instant::now() + self.settings.turn_timeout;
        match client {
            Some(client) => own.min(client.checked_sub(DEADLINE_MARGIN).unwrap_or(client)),
            None => own,
        }
    }

    /// A place among the tenant's turns in flight (TENANT_MAX_PARALLEL),
    /// waiting at most until `deadline`. Taken as the turn starts, before
    /// any work is done for it, so a tenant's excess load waits idle here and
    /// the work in flight, which every tenant's turns share the machine
    /// with, stays bounded per tenant. Waiting on its own conversation, a
    /// turn holds its tenant's place: that costs no one else.
    async fn tenant_share(
        &self,
        tenant: &str,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, EngineError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let share = {
            let mut shares = self.tenant_permits.lock().unwrap();
            shares
                .entry(tenant.to_owned())
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Semaphore::new(
                        self.settings.tenant_max_parallel.max(1),
                    ))
                })
                .clone()
        };
        tokio::time::timeout_at(deadline.into(), share.acquire_owned())
            .await
            .map_err(|_| EngineError::Busy(wait))
            .map(|permit| permit.expect("the semaphore is never closed"))
    }

    /// One of MAX_PARALLEL_EXECUTIONS, waiting at most until `deadline`.
    /// Taken once the conversation is locked: a turn waiting for its
    /// conversation holds nothing another tenant could use.
    /// Waiting turns are served by `priority`, highest first.
    async fn permit(&self, deadline: Instant, priority: u8) -> Result<GatePermit<'_>, EngineError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout_at(deadline.into(), self.permits.acquire(priority))
            .await
            .map_err(|_| EngineError::Busy(wait))
    }

    async fn process_uncounted(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        if request.conversation_id.trim().is_empty() {
            return Err(EngineError::Invalid {
                field: "conversation_id",
                message: "must not be empty".into(),
            });
        }
        let started = Instant::now();
        let deadline = self.deadline(request.deadline);
        // Before anything changes: a turn whose record could not be kept
        // is refused, not acknowledged and lost.
        let reservation = self.durable.reserve()?;
        let _share = self.tenant_share(&request.tenant_id, deadline).await?;
        let key = ConversationKey::new(&request.tenant_id, &request.conversation_id);
        let (lease, loaded) = Box::pin(self.acquire(&key, deadline)).await?;
        // Boxed, as the machine's step below: these futures are large, and
        // a debug build's stack frames hold several copies of what is inline.
        let stepped = self
            .hold(
                &lease,
                deadline,
                Box::pin(async {
                    let _permit = self.permit(deadline, request.priority).await?;
                    if request.bypass_cache {
                        self.store.refresh_flows(&request.tenant_id);
                    }
                    self.plugins.load_plugins(&request.tenant_id).await?;
                    let (flow, mut conversation) = match loaded.conversation.clone() {
                        Some(conversation) => {
                            (self.pinned_flow(&conversation).await?, conversation)
                        }
                        None => self.start(&request).await?,
                    };
                    conversation
                        .user_profile
                        .extend(request.user_profile.clone());
                    // Capped per message and in total: a profile that only
                    // grows would grow every load and save of the conversation.
                    let profile_bytes = serde_json::to_string(&conversation.user_profile)
                        .map_or(0, |json| json.len());
                    if profile_bytes > MAX_PROFILE_BYTES {
                        return Err(EngineError::Invalid {
                            field: "content.metadata.user_profile",
                            message: format!(
                                "the conversation's profile would be {profile_bytes} bytes of JSON; the limit is {MAX_PROFILE_BYTES}"
                            ),
                        });
                    }
                    let mut event = Event::message(&request.text).with_hints(request.hints.clone());
                    for (name, value) in &request.data {
                        event = event.with_data(name, value.clone());
                    }
                    let mut input = json!({ "text": request.text, "data": request.data });
                    if request.review {
                        input["review_required"] = json!(true);
                    }
                    if request.hints.bypass_automation {
                        input["bypass_automation"] = json!(true);
                    }
                    Ok(self.step(flow, conversation, &event, input).await)
                }),
            )
            .await;
        let run = Run {
            lease: &lease,
            loaded: &loaded,
            started,
            deadline,
            reservation,
        };
        let result = match stepped {
            Ok(stepped) => Box::pin(self.finish(run, stepped)).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            // Nothing was committed, or the commit already let go; a lock
            // no longer ours is left alone.
            self.release(lease.clone()).await;
        }
        let mut outcome = result?;
        outcome.lock_wait = lease.waited;
        Ok(outcome)
    }

    /// The conversation's lock and context, waiting for a busy conversation
    /// until `deadline`. A conversation the context store does not know is
    /// resumed from its durable copy, if it has one.
    async fn acquire(
        &self,
        key: &ConversationKey,
        deadline: Instant,
    ) -> Result<(Lease, Loaded), EngineError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (lease, snapshot) = self.contexts.acquire(key, wait).await?;
        if snapshot.version > 0 {
            return Ok((
                lease,
                Loaded {
                    conversation: snapshot.conversation,
                    expected: snapshot.version,
                    base: snapshot.version,
                },
            ));
        }
        let idle_since = self
            .settings
            .idle_ttl
            .map(|ttl| crate::clock::now_ms() - ttl.as_millis() as i64);
        let durable = match self.durable.load(key, idle_since).await {
            Ok(durable) => durable,
            Err(e) => {
                self.release(lease).await;
                return Err(e.into());
            }
        };
        if durable.conversation.is_some() {
            tracing::info!(conversation = %key, version = durable.version, "resumed from the durable copy");
            self.metrics
                .resumed
                .with_label_values(&[&key.tenant_id])
                .inc();
        }
        Ok((
            lease,
            Loaded {
                conversation: durable.conversation,
                expected: 0,
                base: durable.version,
            },
        ))
    }

    /// Runs `work` under the lease until `deadline`, renewing the lease
    /// every third of its time to live. A lease that cannot be renewed
    /// stops the work: it must not go on to write.
    async fn hold<T>(
        &self,
        lease: &Lease,
        deadline: Instant,
        work: impl Future<Output = Result<T, EngineError>>,
    ) -> Result<T, EngineError> {
        let renewals = async {
            loop {
                tokio::time::sleep(lease.ttl / 3).await;
                if let Err(e) = self.contexts.renew(lease).await {
                    return e;
                }
            }
        };
        let budget = deadline.saturating_duration_since(Instant::now());
        tokio::select! {
            done = tokio::time::timeout_at(deadline.into(), work) => {
                done.map_err(|_| EngineError::Timeout(budget))?
            }
            lost = renewals => Err(lost.into()),
        }
    }

    /// Releases a lease without writing; any failure is healed by the
    /// lock's time to live.
    async fn release(&self, lease: Lease) {
        let key = lease.key.clone();
        if let Err(e) = self.contexts.release(lease).await {
            tracing::warn!(conversation = %key, error = %e, "unlock failed");
        }
    }

    /// The flow version a conversation is pinned to.
    async fn pinned_flow(&self, conversation: &Conversation) -> Result<StoredFlow, EngineError> {
        Ok(self
            .store
            .published_flow(
                &conversation.tenant_id,
                &conversation.flow_id,
                Some(&conversation.flow_version),
            )
            .await?)
    }

    /// A new conversation on the flow chosen for it, pinned to the tenant's
    /// active plugin versions.
    async fn start(
        &self,
        request: &TurnRequest,
    ) -> Result<(StoredFlow, Conversation), EngineError> {
        let tenant = request.tenant_id.as_str();
        let (flow, variant) = self.choose_flow(request).await?;
        let mut conversation = Conversation::new(
            tenant,
            &request.conversation_id,
            &request.user_id,
            &flow.flow,
            crate::clock::now_ms(),
        );
        conversation.flow_version = flow.version.clone();
        conversation.ab_variant = variant;
        // Publishing new plugin versions never breaks a conversation in flight.
        for (installed, active) in self.plugins.host().installed(tenant) {
            if active {
                conversation
                    .plugin_versions
                    .insert(installed.name.clone(), installed.version.clone());
            }
        }
        Ok((flow, conversation))
    }

    /// Steps the machine with `event` and follows a `trigger_flow`.
    async fn step(
        &self,
        flow: StoredFlow,
        mut conversation: Conversation,
        event: &Event,
        input: Value,
    ) -> Stepped {
        let state_before = conversation.current_state.clone();
        let had_deadline = next_deadline(&flow.flow, &conversation).is_some();
        let received_at_ms = crate::clock::now_ms();
        // Boxed: the machine's future is large, and a debug build's stack
        // frames hold several copies of whatever is inline.
        let mut step = Box::pin(self.machine.step(&flow.flow, &mut conversation, event)).await;
        if let Some(trigger) = step.trigger_flow.clone() {
            Box::pin(self.follow_trigger(&mut conversation, &mut step, &trigger)).await;
        }
        Stepped {
            flow,
            conversation,
            step,
            state_before,
            had_deadline,
            received_at_ms,
            input,
            kind: event.kind,
        }
    }

    /// Commits a stepped turn and unlocks (one round trip), then schedules
    /// the next timeout and hands the durable copy, the transcript entry
    /// and the analytics event to their writers.
    async fn finish(&self, run: Run<'_>, stepped: Stepped) -> Result<TurnOutcome, EngineError> {
        let Stepped {
            flow,
            conversation,
            step,
            state_before,
            had_deadline,
            received_at_ms,
            input,
            kind,
        } = stepped;
        let version = run.loaded.base + 1;
        self.contexts
            .commit(
                run.lease,
                Write {
                    conversation: Some(&conversation),
                    expected: run.loaded.expected,
                    version,
                },
            )
            .await?;
        let key = &run.lease.key;
        let tenant = key.tenant_id.clone();
        let wake_at = step.wake_at_ms;
        // Most turns neither had nor have a deadline: no round trip for them.
        if (wake_at.is_some() || had_deadline)
            && let Err(e) = self.wakeups.schedule(key, wake_at).await
        {
            tracing::warn!(conversation = %key, error = %e, "timeout not scheduled");
        }

        let duration = run.started.elapsed();
        let record = TurnRecord {
            conversation_id: conversation.conversation_id.clone(),
            started_at_ms: conversation.created_at_ms,
            turn: conversation.turn,
            flow_id: flow.flow_id.clone(),
            flow_version: flow.version.clone(),
            state_before,
            state_after: step.state.clone(),
            input,
            output: serde_json::to_value(&step).unwrap_or(Value::Null),
            received_at_ms,
            duration_us: duration.as_micros() as u64,
        };
        let analytics = json!({
            "type": if kind == EventKind::Timeout { "timeout_turn" } else { "turn" },
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
            "handoff": step.handoff,
            "review_required": record.input.get("review_required").is_some(),
            "received_at_ms": received_at_ms,
            "duration_us": record.duration_us,
        });
        self.analytics.publish(&tenant, &analytics);
        let write = TurnWrite {
            key: key.clone(),
            version,
            conversation: Some(conversation.clone()),
            updated_at_ms: crate::clock::now_ms(),
            transcript: Some(record),
        };
        self.keep(run.reservation, write, run.deadline).await?;
        Ok(TurnOutcome {
            step,
            conversation,
            duration,
            lock_wait: Duration::ZERO,
            calls: Vec::new(),
            cache: CacheUse::Hit,
        })
    }

    /// Hands a committed turn to the durable writer; with sync durability
    /// waits (until the turn's deadline) for it to be in the database.
    async fn keep(
        &self,
        reservation: Reservation,
        write: TurnWrite,
        deadline: Instant,
    ) -> Result<(), EngineError> {
        let budget = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout_at(deadline.into(), self.durable.write(reservation, write))
            .await
            .map_err(|_| EngineError::Timeout(budget))
    }

    /// Moves the conversation to the flow a `trigger_flow` action named
    /// (its latest published version) and enters it, as part of this turn.
    /// A trigger that cannot be followed is an action error of the turn,
    /// and the conversation stays where the flow left it.
    async fn follow_trigger(
        &self,
        conversation: &mut Conversation,
        step: &mut StepResult,
        trigger: &FlowTrigger,
    ) {
        let switched = match self
            .store
            .published_flow(&conversation.tenant_id, &trigger.flow_id, None)
            .await
        {
            Ok(target) => conversation
                .switch_flow(
                    &target.flow,
                    trigger.target_state.as_deref(),
                    crate::clock::now_ms(),
                )
                .map(|()| {
                    conversation.flow_version = target.version.clone();
                    target
                }),
            Err(e) => Err(e.to_string()),
        };
        match switched {
            // The reply goes on with the new flow's first state, so the user
            // sees what it asks. A trigger in there is not followed further.
            Ok(target) => step.absorb(self.machine.enter(&target.flow, conversation).await),
            Err(message) => {
                conversation.error_count += 1;
                step.errors.push(TurnError {
                    kind: TurnErrorKind::Action,
                    state: conversation.current_state.clone(),
                    message: format!("trigger_flow {}: {message}", trigger.flow_id),
                });
            }
        }
    }

    /// Delivers a timeout event to a conversation whose deadline may have
    /// passed. Returns the turn if one ran: nothing runs for a conversation
    /// that is gone or whose current state's deadline is not (or no longer)
    /// due.
    pub async fn deliver_timeout(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<TimeoutTurn>, EngineError> {
        let started = Instant::now();
        let deadline = self.deadline(None);
        let reservation = self.durable.reserve()?;
        let _share = self.tenant_share(&key.tenant_id, deadline).await?;
        let (lease, loaded) = self.acquire(key, deadline).await?;
        let result = async {
            let Some(conversation) = loaded.conversation.clone() else {
                // Reset, expired or lost: nothing will ever be due for it.
                self.unschedule(key).await;
                return Ok(None);
            };
            let stepped = self
                .hold(&lease, deadline, Box::pin(async {
                    let _permit = self.permit(deadline, 0).await?;
                    self.plugins.load_plugins(&key.tenant_id).await?;
                    let flow = self.pinned_flow(&conversation).await?;
                    match next_deadline(&flow.flow, &conversation) {
                        Some(due) if due <= crate::clock::now_ms() => {}
                        later => {
                            // A message moved it on; keep whatever is due now.
                            if let Err(e) = self.wakeups.schedule(key, later).await {
                                tracing::warn!(conversation = %key, error = %e, "timeout not scheduled");
                            }
                            return Ok(None);
                        }
                    }
                    let input = json!({ "timeout": true });
                    Ok(Some(
                        self.step(flow, conversation, &Event::timeout(), input)
                            .await,
                    ))
                }))
                .await?;
            let Some(stepped) = stepped else {
                return Ok(None);
            };
            let state_before = stepped.state_before.clone();
            let run = Run {
                lease: &lease,
                loaded: &loaded,
                started,
                deadline,
                reservation,
            };
            let outcome = self.finish(run, stepped).await?;
            Ok(Some(TimeoutTurn {
                key: key.clone(),
                state_before,
                step: outcome.step,
            }))
        };
        let ((result, _cache), calls) = record_calls(track_cache(result)).await;
        if !matches!(result, Ok(Some(_))) {
            self.release(lease).await;
        }
        self.count_plugin_calls(&key.tenant_id, &calls);
        if let Ok(Some(turn)) = &result {
            self.metrics
                .timeouts_delivered
                .with_label_values(&[&key.tenant_id])
                .inc();
            self.count_turn_errors(&key.tenant_id, &turn.step);
        }
        result
    }

    /// Delivers due timeouts until the process stops: every `interval`, it
    /// claims what is due (each conversation goes to one process at a time)
    /// and runs a timeout turn for each. A delivery that fails is claimed
    /// again when its lease runs out.
    pub async fn run_timeouts(self: Arc<Self>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            // Long enough for a claimed delivery to finish: a permit, the
            // lock and the turn. One that never finishes is claimed again.
            let lease = self.settings.turn_timeout * 3;
            let due = match self
                .wakeups
                .claim_due(crate::clock::now_ms(), 64, lease)
                .await
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read due timeouts");
                    continue;
                }
            };
            for key in due {
                let engine = self.clone();
                tokio::spawn(async move {
                    match engine.deliver_timeout(&key).await {
                        Ok(Some(turn)) => {
                            tracing::info!(conversation = %key, state = %turn.step.state, "timeout delivered");
                            let _ = engine.timeouts.send(Arc::new(turn));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(conversation = %key, error = %e, "timeout not delivered")
                        }
                    }
                });
            }
        }
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
                let flow = match modifications.get("flow_id").and_then(Value::as_str) {
                    Some(flow_id) => {
                        let version = modifications.get("flow_version").and_then(Value::as_str);
                        self.store.published_flow(tenant, flow_id, version).await?
                    }
                    // A variant that changes no flow still names itself:
                    // response templates keyed by its name answer for it.
                    None => self.store.default_flow(tenant).await?,
                };
                return Ok((flow, Some(variant.name.clone())));
            }
        }
        Ok((self.store.default_flow(tenant).await?, None))
    }

    /// The figures of the writers behind the reply, for /metrics.
    pub fn data_path_figures(&self) -> DataPathFigures {
        let stats = self.durable.stats();
        let host = self.plugins.host();
        DataPathFigures {
            durable_backlog: self.durable.backlog(),
            durable_failing: stats.failing.load(Ordering::Relaxed),
            durable_batches: stats.batches.load(Ordering::Relaxed),
            durable_dropped: stats.dropped.load(Ordering::Relaxed),
            analytics_lost: self.analytics.lost(),
            egress_allowed: host.egress_counters().allowed(),
            egress_denied: host.egress_counters().denials(),
            plugin_log_lines_dropped: host.log_lines_dropped(),
            key_lookups: self.store.key_lookups(),
            compiled_cache_bytes: host.compiled_cache_usage().1 as u64,
        }
    }

    /// Each dependency's name, kind, round-trip time, and error if it failed.
    pub async fn probe_dependencies(&self) -> Vec<Probe> {
        let started = Instant::now();
        let database = self.store.ping().await.err().map(|e| e.to_string());
        let database_time = started.elapsed();
        let started = Instant::now();
        let context = self
            .contexts
            .peek(&ConversationKey::new("health", "probe"))
            .await
            .err()
            .map(|e| e.to_string());
        vec![
            Probe {
                name: "database",
                kind: self.store.db().backend().to_string().leak(),
                time: database_time,
                error: database,
            },
            Probe {
                name: "context_store",
                kind: "context",
                time: started.elapsed(),
                error: context,
            },
        ]
    }

    /// How well the engine can serve, and why not fully: without the
    /// context store no turn runs (down); without the database live
    /// conversations still turn from memory and the durable writer queues
    /// (degraded).
    pub async fn health(&self) -> Health {
        let probes = self.probe_dependencies().await;
        let mut down = Vec::new();
        let mut degraded = Vec::new();
        for probe in &probes {
            if let Some(error) = &probe.error {
                // Anonymous callers read the reasons: the error's own text
                // (addresses, driver messages) goes to the log only.
                tracing::warn!(dependency = probe.name, %error, "health probe failed");
                let reason = format!("{}: unavailable", probe.name);
                match probe.name {
                    "context_store" => down.push(reason),
                    _ => degraded.push(reason),
                }
            }
        }
        if self.durable.stats().failing.load(Ordering::Relaxed) {
            degraded.push(format!(
                "durable writer: {} turns wait for the database",
                self.durable.backlog()
            ));
        }
        Health {
            probes,
            down,
            degraded,
        }
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

    /// Forgets a conversation; returns the state it was in. Detached like a
    /// turn, so it always unlocks.
    pub async fn reset(
        self: &Arc<Self>,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<String, EngineError> {
        let (engine, key) = (
            self.clone(),
            ConversationKey::new(tenant_id, conversation_id),
        );
        detached(async move { engine.reset_locked(key).await }).await
    }

    async fn reset_locked(&self, key: ConversationKey) -> Result<String, EngineError> {
        let previous = self
            .rewrite(&key, |conversation| Ok((None, conversation.current_state)))
            .await?;
        self.unschedule(&key).await;
        Ok(previous)
    }

    /// Turns automation back on for a conversation handed to a person;
    /// returns the handoff lifted. Detached like a turn, so it always
    /// unlocks.
    pub async fn resume_automation(
        self: &Arc<Self>,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Handoff, EngineError> {
        let (engine, key) = (
            self.clone(),
            ConversationKey::new(tenant_id, conversation_id),
        );
        detached(async move { engine.resume_locked(key).await }).await
    }

    async fn resume_locked(&self, key: ConversationKey) -> Result<Handoff, EngineError> {
        self.rewrite(&key, |mut conversation| {
            let handoff = conversation.resume_automation().ok_or_else(|| {
                EngineError::Precondition(format!(
                    "conversation {} is not handed to a person",
                    conversation.conversation_id
                ))
            })?;
            Ok((Some(conversation), handoff))
        })
        .await
    }

    /// Changes a conversation outside a turn: locked, `change` gets its
    /// context and says what it becomes (`None` forgets it), which is
    /// committed, kept durably and unlocked. NOT_FOUND if there is none;
    /// an error from `change` changes nothing.
    async fn rewrite<T>(
        &self,
        key: &ConversationKey,
        change: impl FnOnce(Conversation) -> Result<(Option<Conversation>, T), EngineError>,
    ) -> Result<T, EngineError> {
        let deadline = self.deadline(None);
        let reservation = self.durable.reserve()?;
        let (lease, loaded) = self.acquire(key, deadline).await?;
        let Some(conversation) = loaded.conversation.clone() else {
            self.release(lease).await;
            return Err(EngineError::NotFound(format!(
                "conversation {} not found",
                key.conversation_id
            )));
        };
        let (after, answer) = match change(conversation) {
            Ok(changed) => changed,
            Err(e) => {
                self.release(lease).await;
                return Err(e);
            }
        };
        let version = loaded.base + 1;
        let write = Write {
            conversation: after.as_ref(),
            expected: loaded.expected,
            version,
        };
        if let Err(e) = self.contexts.commit(&lease, write).await {
            self.release(lease).await;
            return Err(e.into());
        }
        let write = TurnWrite {
            key: key.clone(),
            version,
            conversation: after,
            updated_at_ms: crate::clock::now_ms(),
            transcript: None,
        };
        self.keep(reservation, write, deadline).await?;
        Ok(answer)
    }

    /// Forgets the conversation's next timeout; a failure only means one
    /// more claim that finds nothing due.
    async fn unschedule(&self, key: &ConversationKey) {
        if let Err(e) = self.wakeups.schedule(key, None).await {
            tracing::warn!(conversation = %key, error = %e, "timeout not cleared");
        }
    }
}

/// One dependency's probe.
#[derive(Debug, Clone)]
pub struct Probe {
    pub name: &'static str,
    pub kind: &'static str,
    pub time: Duration,
    pub error: Option<String>,
}

/// The engine's health: serving if both lists are empty.
#[derive(Debug, Clone)]
pub struct Health {
    pub probes: Vec<Probe>,
    /// Why no turn can run.
    pub down: Vec<String>,
    /// What is not working while turns still run.
    pub degraded: Vec<String>,
}

impl Health {
    /// "serving", "degraded" or "down".
    pub fn state(&self) -> &'static str {
        if !self.down.is_empty() {
            "down"
        } else if !self.degraded.is_empty() {
            "degraded"
        } else {
            "serving"
        }
    }

    /// Every reason, the worst first.
    pub fn reasons(&self) -> impl Iterator<Item = &String> {
        self.down.iter().chain(&self.degraded)
    }
}

/// What a turn found when it took the lock.
struct Loaded {
    conversation: Option<Conversation>,
    /// The context store's version, which the commit must still find.
    expected: u64,
    /// The version the turn's write follows: the context store's, or the
    /// durable copy's when the conversation was resumed from it.
    base: u64,
}

/// What a turn runs under: its lease and what it loaded, when it began,
/// its deadline, and its place in the durable writer's queue.
struct Run<'a> {
    lease: &'a Lease,
    loaded: &'a Loaded,
    started: Instant,
    deadline: Instant,
    reservation: Reservation,
}

/// A turn stepped and not yet committed.
struct Stepped {
    flow: StoredFlow,
    conversation: Conversation,
    step: StepResult,
    state_before: String,
    had_deadline: bool,
    received_at_ms: i64,
    input: Value,
    kind: EventKind,
}

/// Runs `future` as a task of its own and waits for it; dropping the wait
/// leaves the task running to the end. A panic in it is the caller's.
async fn detached<T: Send + 'static>(future: impl Future<Output = T> + Send + 'static) -> T {
    let span = tracing::Span::current();
    match tokio::spawn(tracing::Instrument::instrument(future, span)).await {
        Ok(output) => output,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => unreachable!("the runtime cancelled a turn: {e}"),
    }
}
