//! What a store holds for one plugin call: WASI with nothing granted, HTTP
//! behind the tenant's allow-list, the call's limits, and the plugin's config.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::allow_list::AllowList;
use crate::bindings::host::{self, Level};
use crate::egress::{self, Gate};
use crate::limits::Limits;
use crate::log_budget::{CallLog, LogAllowances};

/// Who is being called, for logs.
#[derive(Debug, Clone)]
pub struct CallSite {
    pub tenant: Arc<str>,
    pub plugin: Arc<str>,
}

/// Where a call's log lines go: its own budget, then its plugin's allowance.
#[derive(Clone)]
struct CallLogger {
    site: CallSite,
    call: Arc<Mutex<CallLog>>,
    allowances: Arc<LogAllowances>,
}

impl CallLogger {
    fn admit(&self, len: usize) -> bool {
        let mut call = self.call.lock().unwrap();
        self.allowances
            .admit(&mut call, &self.site.tenant, &self.site.plugin, len)
    }
}

/// The data of one call's store.
pub struct StoreState {
    logger: CallLogger,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: Outbound,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    config: Arc<BTreeMap<String, String>>,
}

impl StoreState {
    pub fn new(
        site: CallSite,
        limits: &Limits,
        allow_list: Arc<AllowList>,
        gate: Arc<Gate>,
        allowances: Arc<LogAllowances>,
        config: Arc<BTreeMap<String, String>>,
    ) -> StoreState {
        let logger = CallLogger {
            site: site.clone(),
            call: Arc::new(Mutex::new(CallLog::new())),
            allowances,
        };
        // No env, no args, no preopened directories, no sockets: what a
        // component needs to start, and nothing more.
        let wasi = WasiCtx::builder()
            .stdout(LogStream::new(logger.clone(), "stdout"))
            .stderr(LogStream::new(logger.clone(), "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        StoreState {
            outbound: Outbound {
                site: site.clone(),
                allow_list,
                gate,
            },
            logger,
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: CallLimiter::new(limits),
            config,
        }
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        let message = truncate(&message, 4096);
        if !self.logger.admit(message.len()) {
            return;
        }
        let (tenant, plugin) = (&*self.logger.site.tenant, &*self.logger.site.plugin);
        match level {
            Level::Trace => tracing::trace!(tenant, plugin, "{message}"),
            Level::Debug => tracing::debug!(tenant, plugin, "{message}"),
            Level::Info => tracing::info!(tenant, plugin, "{message}"),
            Level::Warn => tracing::warn!(tenant, plugin, "{message}"),
            Level::Error => tracing::error!(tenant, plugin, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

impl crate::bindings::types::Host for StoreState {}

/// Outbound HTTP: only to the tenant's allow-list, only to addresses the
/// egress policy lets out.
struct Outbound {
    site: CallSite,
    allow_list: Arc<AllowList>,
    gate: Arc<Gate>,
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        // `fut` reports errors of the response body; the body's own stream
        // carries them here, so it is not needed.
        _ = fut;
        let uri = request.uri();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = uri.authority().map_or("", |a| a.as_str()).to_owned();
        let (site, allow_list, gate) = (
            self.site.clone(),
            self.allow_list.clone(),
            self.gate.clone(),
        );
        Box::new(async move {
            let decision = egress::decide(&gate.policy, &allow_list, &authority, https).await;
            egress::record(&gate.counters, &site.tenant, &site.plugin, &decision);
            let destination = decision.map_err(|refusal| {
                wasmtime_wasi_http::Error::InternalError(Some(refusal.to_string()))
            })?;
            tracing::debug!(
                tenant = &*site.tenant,
                plugin = &*site.plugin,
                host = %destination.host,
                port = destination.port,
                "outbound request"
            );
            egress::send(destination, request, options).await
        })
    }
}

/// A limit a call ran into, carried as the trap's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the plugin exceeded its {0} limit")]
pub struct LimitHit(pub &'static str);

/// Memory and table caps of one call, summed over the component's memories.
pub(crate) struct CallLimiter {
    memory_cap: usize,
    table_cap: usize,
    memory_total: usize,
}

impl CallLimiter {
    fn new(limits: &Limits) -> CallLimiter {
        CallLimiter {
            memory_cap: limits.memory_bytes,
            table_cap: limits.table_elements,
            memory_total: 0,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        let total = self.memory_total - current.min(self.memory_total) + desired;
        if total > self.memory_cap {
            return Err(LimitHit("memory").into());
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool> {
        if desired > self.table_cap {
            return Err(LimitHit("table").into());
        }
        Ok(true)
    }
}

impl Drop for StoreState {
    fn drop(&mut self) {
        let dropped = self.logger.call.lock().map_or(0, |call| call.dropped());
        if dropped > 0 {
            tracing::warn!(
                tenant = &*self.logger.site.tenant,
                plugin = &*self.logger.site.plugin,
                dropped,
                "log lines over the plugin's log limits were dropped"
            );
        }
    }
}

/// A plugin's stdout or stderr, into the log with tenant and plugin.
#[derive(Clone)]
struct LogStream {
    logger: CallLogger,
    name: &'static str,
}

impl LogStream {
    fn new(logger: CallLogger, name: &'static str) -> LogStream {
        LogStream { logger, name }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let text = String::from_utf8_lossy(buf);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = truncate(line, 4096);
            if !self.logger.admit(line.len()) {
                continue;
            }
            tracing::info!(
                tenant = &*self.logger.site.tenant,
                plugin = &*self.logger.site.plugin,
                stream = self.name,
                "{line}"
            );
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
