//! One plugin call: resolve, check the breaker, instantiate fresh under the
//! limits, call, and turn whatever happened into a value or a typed error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_flow::{
    ActionOutput, Classification, Manifest, PluginCall, PluginError, PluginRuntime, PluginWorld,
    RateLimit, StateOutput, StateTypeManifest, ToolAnnotations, ToolManifest,
};
use serde_json::Value;
use tracing::Instrument;
use wasmtime::{Store, Trap};

use crate::bindings::types as wit;
use crate::convert;
use crate::host::{Installed, PluginHost, Typed};
use crate::ledger::{self, CallRecord};
use crate::limits::Limits;
use crate::state::{LimitHit, StoreState};

/// Extra time past the deadline before the host stops waiting on a call
/// that is blocked outside wasm (e.g. on the network), where epochs cannot
/// interrupt it.
const DEADLINE_GRACE: Duration = Duration::from_millis(100);

/// How long describe() may take: it only returns a constant manifest, and
/// it runs while a plugin is installed, where nothing should wait long.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(2);

type CallFuture<'s, R> =
    std::pin::Pin<Box<dyn Future<Output = wasmtime::Result<Result<R, wit::Error>>> + Send + 's>>;

/// Tells the turn being recorded, if any, what a call cost.
fn note(installed: &Installed, stats: CallStats, error: Option<&PluginError>) {
    ledger::note(CallRecord {
        plugin: installed.name.clone(),
        version: installed.version.clone(),
        world: installed.world,
        fuel_used: stats.fuel_used,
        duration: stats.duration,
        error: error.map(PluginError::kind),
    });
}

/// What a call cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallStats {
    pub fuel_used: u64,
    pub duration: Duration,
}

impl PluginHost {
    /// Runs `f` on a fresh store for `installed`, under its tenant's limits,
    /// if the plugin's breaker admits the call; the outcome goes to the
    /// breaker.
    async fn run<R>(
        &self,
        installed: &Installed,
        requested: Duration,
        measure: impl Fn(&R) -> usize,
        f: impl for<'s> FnOnce(&'s mut Store<StoreState>) -> CallFuture<'s, R>,
    ) -> Result<(R, CallStats), PluginError> {
        let (tenant, plugin) = (installed.tenant.as_str(), installed.name.as_str());
        let admission = match self.inner.breakers.admit(tenant, plugin) {
            Ok(admission) => admission,
            Err(wait) => {
                let error = PluginError::Unavailable {
                    plugin: plugin.to_owned(),
                    reason: format!("it failed repeatedly; next try in {} ms", wait.as_millis()),
                };
                note(installed, CallStats::default(), Some(&error));
                return Err(error);
            }
        };
        let outcome = self.run_unguarded(installed, requested, measure, f).await;
        match &outcome {
            // Back-pressure says nothing about the plugin.
            Err(PluginError::Busy { .. }) => admission.withdraw(),
            // A plugin's own error is an answer, not a failure of the plugin.
            outcome => admission.report(matches!(outcome, Ok(_) | Err(PluginError::Failed { .. }))),
        }
        if let Err(e) = &outcome {
            tracing::warn!(tenant, plugin, error = %e, "plugin call failed");
        }
        outcome
    }

    /// [`PluginHost::run`] without the breaker: for the host's own calls
    /// (describe() at upload), whose failure refuses the upload instead.
    async fn run_unguarded<R>(
        &self,
        installed: &Installed,
        requested: Duration,
        measure: impl Fn(&R) -> usize,
        f: impl for<'s> FnOnce(&'s mut Store<StoreState>) -> CallFuture<'s, R>,
    ) -> Result<(R, CallStats), PluginError> {
        let (tenant, plugin) = (installed.tenant.as_str(), installed.name.as_str());
        let (mut limits, allow_list) = self.policy(tenant, installed.world);
        // The caller may want an answer sooner than the plugin's limit allows.
        limits.deadline = limits.deadline.min(requested);
        let span = tracing::info_span!(
            "plugin_call",
            tenant,
            plugin,
            world = %installed.world,
            fuel_used = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        async {
            let mut store = match self.store(installed, &limits, allow_list) {
                Ok(store) => store,
                Err(e) => {
                    let error = trap(plugin, e);
                    note(installed, CallStats::default(), Some(&error));
                    return Err(error);
                }
            };
            let call = f(&mut store);
            let result = tokio::time::timeout(limits.deadline + DEADLINE_GRACE, call).await;
            let fuel_used = limits.fuel - store.get_fuel().unwrap_or(0);
            let stats = CallStats {
                fuel_used,
                duration: started.elapsed(),
            };
            let span = tracing::Span::current();
            span.record("fuel_used", fuel_used);
            span.record("duration_ms", stats.duration.as_millis() as u64);
            let outcome = match result {
                Err(_elapsed) => Err(timeout(plugin, &limits)),
                Ok(Err(error)) => Err(classify(plugin, &limits, error)),
                Ok(Ok(Err(error))) => Err(PluginError::Failed {
                    plugin: plugin.to_owned(),
                    message: format!("{}: {}", error.code, error.message),
                }),
                Ok(Ok(Ok(value))) => {
                    let size = measure(&value);
                    if size > limits.result_bytes {
                        Err(PluginError::LimitExceeded {
                            plugin: plugin.to_owned(),
                            limit: format!("result size ({size} bytes > {})", limits.result_bytes),
                        })
                    } else {
                        Ok((value, stats))
                    }
                }
            };
            note(installed, stats, outcome.as_ref().err());
            outcome
        }
        .instrument(span)
        .await
    }

    /// The plugin a call names; a plugin missing or of another world is
    /// noted as a failed call of the turn.
    fn resolve_for(
        &self,
        call: &PluginCall<'_>,
        world: PluginWorld,
    ) -> Result<Arc<Installed>, PluginError> {
        self.resolve_unnoted(call, world).inspect_err(|error| {
            ledger::note(CallRecord {
                plugin: call.plugin.to_owned(),
                version: call.version.unwrap_or_default().to_owned(),
                world,
                fuel_used: 0,
                duration: Duration::ZERO,
                error: Some(error.kind()),
            })
        })
    }

    fn resolve_unnoted(
        &self,
        call: &PluginCall<'_>,
        world: PluginWorld,
    ) -> Result<Arc<Installed>, PluginError> {
        let installed = match call.version {
            Some(version) => self.resolve_version(call.tenant_id, call.plugin, version),
            None => self.resolve(call.tenant_id, call.plugin),
        };
        let installed = installed.ok_or_else(|| PluginError::NotFound {
            plugin: match call.version {
                Some(version) => format!("{}@{version}", call.plugin),
                None => call.plugin.to_owned(),
            },
        })?;
        if installed.world != world {
            return Err(PluginError::Unavailable {
                plugin: call.plugin.to_owned(),
                reason: format!(
                    "it serves the {} world, not the {world} world",
                    installed.world
                ),
            });
        }
        Ok(installed)
    }

    /// Calls describe() of a tool or state type, for its manifest.
    pub(crate) async fn describe(
        &self,
        installed: &Installed,
    ) -> Result<Option<Manifest>, PluginError> {
        // The host asks for itself: not a call of the turn that installs it.
        ledger::unrecorded(self.call_describe(installed)).await
    }

    async fn call_describe(&self, installed: &Installed) -> Result<Option<Manifest>, PluginError> {
        match &installed.typed {
            Typed::Tool(_, Some(annotated)) => {
                let pre = annotated.clone();
                let ((manifest, hints), _) = self
                    .run_unguarded(
                        installed,
                        DESCRIBE_DEADLINE,
                        |(m, h): &(wit::ToolManifest, AnnotationsHints)| {
                            tool_manifest_size(m) + h.title.as_ref().map_or(0, String::len)
                        },
                        |store| {
                            Box::pin(async move {
                                let bindings = pre.instantiate_async(&mut *store).await?;
                                let manifest = bindings
                                    .mcp_plugin_tools()
                                    .call_describe(&mut *store)
                                    .await?;
                                let hints = bindings
                                    .mcp_plugin_tool_annotations()
                                    .call_hints(&mut *store)
                                    .await?;
                                Ok(Ok((manifest, hints)))
                            })
                        },
                    )
                    .await?;
                let annotations = ToolAnnotations {
                    title: hints.title,
                    read_only: hints.read_only,
                    destructive: hints.destructive,
                    idempotent: hints.idempotent,
                    open_world: hints.open_world,
                    requires_confirmation: hints.requires_confirmation,
                };
                Ok(Some(Manifest::Tool(tool_manifest(manifest, annotations))))
            }
            Typed::Tool(pre, None) => {
                let pre = pre.clone();
                let (manifest, _) = self
                    .run_unguarded(installed, DESCRIBE_DEADLINE, tool_manifest_size, |store| {
                        Box::pin(async move {
                            let bindings = pre.instantiate_async(&mut *store).await?;
                            Ok(Ok(bindings
                                .mcp_plugin_tools()
                                .call_describe(&mut *store)
                                .await?))
                        })
                    })
                    .await?;
                Ok(Some(Manifest::Tool(tool_manifest(
                    manifest,
                    ToolAnnotations::default(),
                ))))
            }
            Typed::StateType(pre) => {
                let pre = pre.clone();
                let (manifest, _) = self
                    .run_unguarded(
                        installed,
                        DESCRIBE_DEADLINE,
                        |m: &wit::StateTypeManifest| m.config_schema.len() + m.description.len(),
                        |store| {
                            Box::pin(async move {
                                let bindings = pre.instantiate_async(&mut *store).await?;
                                Ok(Ok(bindings
                                    .mcp_plugin_state_types()
                                    .call_describe(&mut *store)
                                    .await?))
                            })
                        },
                    )
                    .await?;
                Ok(Some(Manifest::StateType(StateTypeManifest {
                    name: manifest.name,
                    description: manifest.description,
                    config_schema: json_or_text(&manifest.config_schema),
                })))
            }
            _ => Ok(None),
        }
    }

    /// Calls a tool and reports what the call cost (for benchmarks and metrics).
    pub async fn call_tool_with_stats(
        &self,
        call: PluginCall<'_>,
    ) -> Result<(Value, CallStats), PluginError> {
        let installed = self.resolve_for(&call, PluginWorld::Tool)?;
        let Typed::Tool(pre, _) = &installed.typed else {
            unreachable!("world checked")
        };
        let pre = pre.clone();
        let args = call.args.to_string();
        let conversation = convert::conversation(call.conversation);
        let (text, stats) = self
            .run(&installed, call.timeout, String::len, |store| {
                Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut *store).await?;
                    bindings
                        .mcp_plugin_tools()
                        .call_call(&mut *store, &args, &conversation)
                        .await
                })
            })
            .await?;
        let value = serde_json::from_str(&text).map_err(|e| PluginError::Failed {
            plugin: call.plugin.to_owned(),
            message: format!("the result is not JSON: {e}"),
        })?;
        Ok((value, stats))
    }

    /// Evaluates a condition and reports what the call cost.
    pub async fn evaluate_with_stats(
        &self,
        call: PluginCall<'_>,
    ) -> Result<(bool, CallStats), PluginError> {
        let installed = self.resolve_for(&call, PluginWorld::Condition)?;
        let Typed::Condition(pre) = &installed.typed else {
            unreachable!("world checked")
        };
        let pre = pre.clone();
        let args = call.args.to_string();
        let conversation = convert::conversation(call.conversation);
        let event = call.event.map(convert::event);
        self.run(
            &installed,
            call.timeout,
            |_| 1,
            |store| {
                Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut *store).await?;
                    bindings
                        .mcp_plugin_conditions()
                        .call_evaluate(&mut *store, &args, &conversation, event.as_ref())
                        .await
                })
            },
        )
        .await
    }
}

impl PluginRuntime for PluginHost {
    async fn evaluate_condition(&self, call: PluginCall<'_>) -> Result<bool, PluginError> {
        self.evaluate_with_stats(call).await.map(|(ok, _)| ok)
    }

    async fn run_action(&self, call: PluginCall<'_>) -> Result<ActionOutput, PluginError> {
        let installed = self.resolve_for(&call, PluginWorld::Action)?;
        let Typed::Action(pre) = &installed.typed else {
            unreachable!("world checked")
        };
        let pre = pre.clone();
        let args = call.args.to_string();
        let conversation = convert::conversation(call.conversation);
        let event = call.event.map(convert::event);
        let (effects, _) = self
            .run(&installed, call.timeout, convert::effects_size, |store| {
                Box::pin(async move {
                    let bindings = pre.instantiate_async(&mut *store).await?;
                    bindings
                        .mcp_plugin_actions()
                        .call_run(&mut *store, &args, &conversation, event.as_ref())
                        .await
                })
            })
            .await?;
        let (updates, messages) =
            convert::effects(effects).map_err(|message| PluginError::Failed {
                plugin: call.plugin.to_owned(),
                message,
            })?;
        Ok(ActionOutput { updates, messages })
    }

    async fn call_tool(&self, call: PluginCall<'_>) -> Result<Value, PluginError> {
        self.call_tool_with_stats(call)
            .await
            .map(|(value, _)| value)
    }

    async fn execute_state(&self, call: PluginCall<'_>) -> Result<StateOutput, PluginError> {
        let installed = self.resolve_for(&call, PluginWorld::StateType)?;
        let Typed::StateType(pre) = &installed.typed else {
            unreachable!("world checked")
        };
        let pre = pre.clone();
        let config = call.args.to_string();
        let conversation = convert::conversation(call.conversation);
        let event = call.event.map(convert::event);
        let (output, _) = self
            .run(
                &installed,
                call.timeout,
                |o: &wit::StateOutput| convert::effects_size(&o.effects),
                |store| {
                    Box::pin(async move {
                        let bindings = pre.instantiate_async(&mut *store).await?;
                        bindings
                            .mcp_plugin_state_types()
                            .call_execute(&mut *store, &config, &conversation, event.as_ref())
                            .await
                    })
                },
            )
            .await?;
        let (updates, messages) =
            convert::effects(output.effects).map_err(|message| PluginError::Failed {
                plugin: call.plugin.to_owned(),
                message,
            })?;
        Ok(StateOutput {
            updates,
            messages,
            outcome: output.outcome,
            wait_for_input: output.wait_for_input,
        })
    }

    async fn classify_intent(&self, call: PluginCall<'_>) -> Result<Classification, PluginError> {
        let installed = self.resolve_for(&call, PluginWorld::Intent)?;
        let Typed::Intent(pre, with_entities) = &installed.typed else {
            unreachable!("world checked")
        };
        let text = call.event.map(|e| e.text.clone()).unwrap_or_default();
        let conversation = convert::conversation(call.conversation);
        let scores_size =
            |s: &[wit::IntentScore]| -> usize { s.iter().map(|s| s.intent.len() + 8).sum() };
        let Some(pre) = with_entities.clone() else {
            let pre = pre.clone();
            let (scores, _) = self
                .run(
                    &installed,
                    call.timeout,
                    |s: &Vec<wit::IntentScore>| scores_size(s),
                    |store| {
                        Box::pin(async move {
                            let bindings = pre.instantiate_async(&mut *store).await?;
                            bindings
                                .mcp_plugin_intents()
                                .call_classify(&mut *store, &text, &conversation)
                                .await
                        })
                    },
                )
                .await?;
            return Ok(Classification {
                intents: convert::intent_scores(scores),
                entities: Vec::new(),
            });
        };
        let (analysis, _) = self
            .run(
                &installed,
                call.timeout,
                |a: &Analysis| {
                    scores_size(&a.intents)
                        + a.entities
                            .iter()
                            .map(|e| e.name.len() + e.value.len() + 8)
                            .sum::<usize>()
                },
                |store| {
                    Box::pin(async move {
                        let bindings = pre.instantiate_async(&mut *store).await?;
                        bindings
                            .mcp_plugin_intent_entities()
                            .call_analyze(&mut *store, &text, &conversation)
                            .await
                    })
                },
            )
            .await?;
        convert::classification(analysis).map_err(|message| PluginError::Failed {
            plugin: call.plugin.to_owned(),
            message,
        })
    }
}

/// Names the limit a failed call ran into, or calls it a trap.
fn classify(plugin: &str, limits: &Limits, error: wasmtime::Error) -> PluginError {
    let limit = |name: &str| PluginError::LimitExceeded {
        plugin: plugin.to_owned(),
        limit: name.to_owned(),
    };
    if let Some(LimitHit(name)) = error.downcast_ref::<LimitHit>() {
        return limit(name);
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        return PluginError::Busy {
            plugin: plugin.to_owned(),
            reason: format!("the instance pool is full ({full}); try again shortly"),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => limit("fuel"),
        Some(Trap::Interrupt) => timeout(plugin, limits),
        Some(Trap::StackOverflow) => limit("stack"),
        _ => trap(plugin, error),
    }
}

fn timeout(plugin: &str, limits: &Limits) -> PluginError {
    PluginError::Timeout {
        plugin: plugin.to_owned(),
        timeout_ms: limits.deadline.as_millis() as u64,
    }
}

/// The trap itself ("wasm `unreachable` instruction executed"), not the
/// chain around it: callers see this text, and the wasm backtrace and
/// host frames go to the log only.
fn trap(plugin: &str, error: wasmtime::Error) -> PluginError {
    tracing::debug!(plugin, error = format!("{error:?}"), "plugin trap");
    let mut message = error.root_cause().to_string();
    if let Some(end) = message.find('\n') {
        message.truncate(end);
    }
    let mut end = message.len().min(256);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    PluginError::Trap {
        plugin: plugin.to_owned(),
        message,
    }
}

fn json_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

type Analysis = crate::bindings::entity_intent::exports::mcp::plugin::intent_entities::Analysis;

type AnnotationsHints =
    crate::bindings::annotated_tool::exports::mcp::plugin::tool_annotations::ToolHints;

fn tool_manifest_size(m: &wit::ToolManifest) -> usize {
    m.input_schema.len() + m.output_schema.len() + m.description.len()
}

/// A manifest as describe() gave it, with the hints the tool gave.
fn tool_manifest(manifest: wit::ToolManifest, annotations: ToolAnnotations) -> ToolManifest {
    ToolManifest {
        name: manifest.name,
        description: manifest.description,
        input_schema: json_or_text(&manifest.input_schema),
        output_schema: json_or_text(&manifest.output_schema),
        permissions: manifest.permissions,
        rate_limit: manifest.rate_limit.map(|r| RateLimit {
            requests: r.requests,
            per_seconds: r.per_seconds,
        }),
        annotations,
    }
}
