//! One message, end to end (docs/architecture.md): lock the conversation, load or
//! create its context, choose the flow, step the machine with the tenant's
//! plugins, save under the lock, unlock, record the turn.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_flow::machine::{FlowTrigger, next_deadline};
use mcp_flow::{
    ContextError, ContextStore, Conversation, ConversationKey, Event, Lease, Machine, Snapshot,
    StepResult, TurnError, TurnErrorKind,
};
use mcp_registry::{PluginRegistry, RegistryError};
use mcp_store::{
    Analytics, CacheUse, Store, StoreError, StoredFlow, TurnRecord, Wakeups, track_cache,
};
use mcp_wasm::{CallRecord, PluginHost, record_calls};
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
    /// The client's deadline (`grpc-timeout`): the turn answers before it,
    /// with DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED if it must.
    pub deadline: Option<Instant>,
}

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
    pub wakeups: Wakeups,
    /// Timeout turns run by this process, for streams to pass on.
    pub timeouts: tokio::sync::broadcast::Sender<Arc<TimeoutTurn>>,
    store: Store,
    plugins: PluginRegistry,
    contexts: Arc<dyn ContextStore>,
    machine: Machine<PluginHost, TokioClock>,
    settings: EngineSettings,
    permits: tokio::sync::Semaphore,
}

impl Engine {
    pub fn new(
        plugins: PluginRegistry,
        contexts: Arc<dyn ContextStore>,
        analytics: Analytics,
        wakeups: Wakeups,
        settings: EngineSettings,
    ) -> Engine {
        let machine = Machine::new(plugins.host().clone(), TokioClock);
        Engine {
            metrics: Arc::new(Metrics::default()),
            analytics,
            wakeups,
            timeouts: tokio::sync::broadcast::channel(256).0,
            store: plugins.store().clone(),
            plugins,
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

    /// What is left of the turn timeout, or of the client's deadline if
    /// that comes first.
    fn budget(&self, deadline: Option<Instant>) -> Duration {
        let timeout = self.settings.turn_timeout;
        match deadline {
            Some(deadline) => timeout.min(
                deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(DEADLINE_MARGIN),
            ),
            None => timeout,
        }
    }

    /// A permit to run a turn (MAX_PARALLEL_EXECUTIONS), waiting at most
    /// `wait`.
    async fn permit(
        &self,
        wait: Duration,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, EngineError> {
        tokio::time::timeout(wait, self.permits.acquire())
            .await
            .map_err(|_| EngineError::Busy(wait))
            .map(|permit| permit.expect("the semaphore is never closed"))
    }

    async fn process_uncounted(&self, request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        if request.conversation_id.trim().is_empty() {
            return Err(EngineError::Invalid {
                field: "conversation_id",
                message: "must not be empty".into(),
            });
        }
        let started = Instant::now();
        let _permit = self.permit(self.budget(request.deadline)).await?;
        let key = ConversationKey::new(&request.tenant_id, &request.conversation_id);
        let lease = self
            .lock_within(&key, self.budget(request.deadline))
            .await?;
        let result = self.locked_turn(&lease, &request, started).await;
        self.unlock(lease.clone()).await;
        let mut outcome = result?;
        outcome.lock_wait = lease.waited;
        Ok(outcome)
    }

    /// The conversation's lock, waiting no longer than `budget` (the lock
    /// store's own timeout may be shorter).
    async fn lock_within(
        &self,
        key: &ConversationKey,
        budget: Duration,
    ) -> Result<Lease, EngineError> {
        match tokio::time::timeout(budget, self.contexts.lock(key)).await {
            Ok(lease) => Ok(lease?),
            Err(_) => Err(ContextError::LockTimeout {
                key: key.clone(),
                waited: budget,
            }
            .into()),
        }
    }

    /// A lease that expired releases nothing; any failure to unlock is
    /// healed by the lock's time to live.
    async fn unlock(&self, lease: Lease) {
        let key = lease.key.clone();
        if let Err(e) = self.contexts.unlock(lease).await {
            tracing::warn!(conversation = %key, error = %e, "unlock failed");
        }
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
        self.plugins.load_plugins(tenant).await?;
        let (flow, mut conversation) = match conversation {
            Some(conversation) => (self.pinned_flow(&conversation).await?, conversation),
            None => self.start(request).await?,
        };
        conversation
            .user_profile
            .extend(request.user_profile.clone());
        let mut event = Event::message(&request.text);
        for (name, value) in &request.data {
            event = event.with_data(name, value.clone());
        }
        let input = json!({ "text": request.text, "data": request.data });
        let run = Run {
            lease,
            version,
            started,
            deadline: request.deadline,
        };
        self.advance(run, flow, conversation, &event, input).await
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

    /// Steps the machine with `event`, follows a `trigger_flow`, saves under
    /// the lease, schedules the next timeout, records the turn.
    async fn advance(
        &self,
        run: Run<'_>,
        flow: StoredFlow,
        mut conversation: Conversation,
        event: &Event,
        input: Value,
    ) -> Result<TurnOutcome, EngineError> {
        let tenant = conversation.tenant_id.clone();
        let state_before = conversation.current_state.clone();
        let had_deadline = next_deadline(&flow.flow, &conversation).is_some();
        let received_at_ms = crate::clock::now_ms();
        let budget = self.budget(run.deadline);
        let mut step = tokio::time::timeout(
            budget,
            self.machine.step(&flow.flow, &mut conversation, event),
        )
        .await
        .map_err(|_| EngineError::Timeout(budget))?;
        if let Some(trigger) = step.trigger_flow.clone() {
            self.follow_trigger(&mut conversation, &mut step, &trigger)
                .await;
        }
        self.contexts
            .save(run.lease, &conversation, run.version)
            .await?;
        let wake_at = step.wake_at_ms;
        // Most turns neither had nor have a deadline: no round trip for them.
        if (wake_at.is_some() || had_deadline)
            && let Err(e) = self.wakeups.schedule(&run.lease.key, wake_at).await
        {
            tracing::warn!(conversation = %run.lease.key, error = %e, "timeout not scheduled");
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
        // The turn happened; a transcript that cannot be written is logged,
        // not turned into a failed reply.
        if let Err(e) = self.store.record_turn(&tenant, &record).await {
            tracing::warn!(tenant, conversation = %record.conversation_id, error = %e, "transcript not recorded");
        }
        let analytics = json!({
            "type": if event.kind == mcp_flow::EventKind::Timeout { "timeout_turn" } else { "turn" },
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
        self.analytics.publish(&tenant, &analytics).await;
        Ok(TurnOutcome {
            step,
            conversation,
            duration,
            lock_wait: Duration::ZERO,
            calls: Vec::new(),
            cache: CacheUse::Hit,
        })
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
        let _permit = self.permit(self.settings.turn_timeout).await?;
        let lease = self.contexts.lock(key).await?;
        let result = async {
            let snapshot = self.contexts.load(&lease).await?;
            let Some(conversation) = snapshot.conversation else {
                // Reset, expired or lost: nothing will ever be due for it.
                self.unschedule(key).await;
                return Ok(None);
            };
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
            let state_before = conversation.current_state.clone();
            let run = Run {
                lease: &lease,
                version: snapshot.version,
                started,
                deadline: None,
            };
            let input = json!({ "timeout": true });
            let outcome = self
                .advance(run, flow, conversation, &Event::timeout(), input)
                .await?;
            Ok(Some(TimeoutTurn {
                key: key.clone(),
                state_before,
                step: outcome.step,
            }))
        };
        let ((result, _cache), calls) = record_calls(track_cache(result)).await;
        self.unlock(lease).await;
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
        let conversation_id = key.conversation_id.clone();
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
            self.unschedule(&key).await;
            Ok(previous)
        }
        .await;
        let _ = self.contexts.unlock(lease).await;
        result
    }

    /// Forgets the conversation's next timeout; a failure only means one
    /// more claim that finds nothing due.
    async fn unschedule(&self, key: &ConversationKey) {
        if let Err(e) = self.wakeups.schedule(key, None).await {
            tracing::warn!(conversation = %key, error = %e, "timeout not cleared");
        }
    }
}

/// What a turn runs under: its lease, the context version it read, when it
/// began and the client's deadline.
struct Run<'a> {
    lease: &'a Lease,
    version: u64,
    started: Instant,
    deadline: Option<Instant>,
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

async fn sqlx_probe(store: &Store) -> Option<String> {
    store.ping().await.err().map(|e| e.to_string())
}
