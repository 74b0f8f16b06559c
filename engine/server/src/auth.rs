//! `authorization: Bearer <key>` on every call: the key names the tenant and
//! what it may do.
//!
//! Keys are checked by a tower layer in front of each service, from the
//! headers alone, before a handler runs and before the body is read: a call
//! without a valid key costs no decoding, and a malformed key no lookup.
//! Handlers find the caller in the request's extensions.
//!
//! The layer also names each call: a request id, taken from the caller's
//! `x-request-id` when it is a plausible one, made up otherwise, returned in
//! the response's `x-request-id`, carried by every log line of the call and
//! by the messages of errors whose cause is only logged.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use mcp_store::{ApiKey, RateLimiter, Scope, Store};
use subtle::ConstantTimeEq;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Status};
use tower_service::Service;
use tracing::Instrument;

/// The key a stream's caller presented, kept so an open stream can be ended
/// when the key is revoked.
#[derive(Clone)]
pub struct PresentedKey(pub Arc<str>);

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// The id of the call being served, if the layer named one.
pub fn request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// `message`, with the request id to quote when asking about it.
pub fn with_request_id(message: &str) -> String {
    match request_id() {
        Some(id) => format!("{message} (request id {id})"),
        None => message.to_owned(),
    }
}

/// The caller's id when it is one worth repeating (a log line, a header),
/// else a new one: this process's random prefix and a count.
fn name_request(header: Option<&http::HeaderValue>) -> Arc<str> {
    static PREFIX: LazyLock<String> = LazyLock::new(|| {
        format!(
            "{:08x}",
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        )
    });
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let given = header.and_then(|h| h.to_str().ok()).filter(|id| {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    });
    match given {
        Some(id) => id.into(),
        None => format!("{}-{}", *PREFIX, NEXT.fetch_add(1, Ordering::Relaxed)).into(),
    }
}

/// Who is calling, as the layer found out.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator key (MCP_ADMIN_KEY).
    Operator,
    /// A tenant's API key.
    Key(ApiKey),
}

/// Which callers a service lets through to its handlers.
#[derive(Clone)]
pub enum Admits {
    /// Tenant keys; methods named in `open` need none (health checks).
    TenantKeys { open: &'static [&'static str] },
    /// The operator key or a tenant key; each handler says which it needs.
    OperatorOrTenantKeys { operator_key: Option<Arc<str>> },
}

/// A service behind the key check and the key's and tenant's rate limits.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    store: Store,
    admits: Admits,
    limiter: Arc<RateLimiter>,
}

impl<S> Authenticated<S> {
    pub fn new(
        inner: S,
        store: Store,
        admits: Admits,
        limiter: Arc<RateLimiter>,
    ) -> Authenticated<S> {
        Authenticated {
            inner,
            store,
            admits,
            limiter,
        }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Authenticated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (store, admits, limiter) = (
            self.store.clone(),
            self.admits.clone(),
            self.limiter.clone(),
        );
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned();
        let header = request.headers().get(http::header::AUTHORIZATION).cloned();
        let id = name_request(request.headers().get(REQUEST_ID_HEADER));
        let span = tracing::info_span!("request", id = %id, method = %method);
        let served = async move {
            match identify(&store, &admits, &method, header.as_ref()).await {
                Ok(Some(caller)) => {
                    if let Caller::Key(key) = &caller {
                        if let Err(limited) = limiter.check(&key.id, &key.tenant_id).await {
                            return Ok(rate_limited(limited).into_http());
                        }
                        if let Some(token) = header.as_ref().and_then(|h| bearer(Some(h)).ok()) {
                            request.extensions_mut().insert(PresentedKey(token.into()));
                        }
                    }
                    request.extensions_mut().insert(caller);
                }
                Ok(None) => {}
                Err(status) => return Ok(status.into_http()),
            }
            inner.call(request).await
        };
        Box::pin(REQUEST_ID.scope(id.clone(), async move {
            let mut response = served.instrument(span).await?;
            if let Ok(value) = http::HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID_HEADER, value);
            }
            Ok(response)
        }))
    }
}

/// Where a call's id comes in and goes out.
const REQUEST_ID_HEADER: &str = "x-request-id";

/// How often an open stream checks its key when no change was announced:
/// the change feed's own fallback, should it be lost.
const KEY_RECHECK: Duration = Duration::from_secs(10);

/// Resolves once `token` no longer verifies: revoked, its tenant deleted.
/// Woken by every key change this process hears of (its own at once,
/// others' through the change feed within a second); while the database is
/// unreachable the key stands, as it does for new calls.
pub async fn revoked(store: Store, token: Arc<str>) {
    let mut changes = store.watch_keys();
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() {
                return std::future::pending().await;
            },
            _ = tokio::time::sleep(KEY_RECHECK) => {}
        }
        if let Ok(None) = store.verify_api_key(&token).await {
            return;
        }
    }
}

/// The caller of a request, or the status that refuses it; `None` for an
/// open method.
async fn identify(
    store: &Store,
    admits: &Admits,
    method: &str,
    header: Option<&http::HeaderValue>,
) -> Result<Option<Caller>, Status> {
    match admits {
        Admits::TenantKeys { open } => {
            if open.contains(&method) {
                return Ok(None);
            }
            let token = bearer(header)?;
            verify(store, token).await.map(|key| Some(Caller::Key(key)))
        }
        Admits::OperatorOrTenantKeys { operator_key } => {
            let token = bearer(header)?;
            if let Some(expected) = operator_key
                && bool::from(token.as_bytes().ct_eq(expected.as_bytes()))
            {
                return Ok(Some(Caller::Operator));
            }
            verify(store, token).await.map(|key| Some(Caller::Key(key)))
        }
    }
}

/// RESOURCE_EXHAUSTED, with the wait in the message and in `retry-after-ms`.
fn rate_limited(limited: mcp_store::RateLimited) -> Status {
    let mut status = Status::resource_exhausted(limited.to_string());
    if let Ok(value) = limited.retry_after.as_millis().to_string().parse() {
        status.metadata_mut().insert("retry-after-ms", value);
    }
    status
}

/// A tenant key, checked by the store (from memory when it can).
async fn verify(store: &Store, token: &str) -> Result<ApiKey, Status> {
    match store.verify_api_key(token).await {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(Status::unauthenticated("the API key is unknown or revoked")),
        Err(e) => {
            tracing::error!(error = %e, "verifying an API key failed");
            Err(Status::unavailable("the key store is unavailable"))
        }
    }
}

/// The tenant key the layer checked for this request.
pub fn authenticate<T>(request: &Request<T>) -> Result<ApiKey, Status> {
    match request.extensions().get::<Caller>() {
        Some(Caller::Key(key)) => Ok(key.clone()),
        Some(Caller::Operator) => Err(Status::permission_denied(
            "this call needs a tenant's API key, not the operator key",
        )),
        None => Err(Status::unauthenticated(
            "missing authorization: Bearer <api key>",
        )),
    }
}

/// The key must belong to `tenant_id` and carry `scope`.
pub fn authorize(key: &ApiKey, tenant_id: &str, scope: Scope) -> Result<(), Status> {
    if tenant_id.is_empty() {
        return Err(Status::invalid_argument(
            "tenant_context.tenant_id: must not be empty",
        ));
    }
    if key.tenant_id != tenant_id {
        return Err(Status::permission_denied(
            "the API key belongs to another tenant",
        ));
    }
    if !key.allows(scope) {
        return Err(Status::permission_denied(format!(
            "the API key lacks the {scope} scope"
        )));
    }
    Ok(())
}

/// Whether the layer found the operator key on the request.
pub fn is_operator<T>(request: &Request<T>, operator_key: Option<&str>) -> Result<(), Status> {
    match (request.extensions().get::<Caller>(), operator_key) {
        (Some(Caller::Operator), Some(_)) => Ok(()),
        (_, None) => Err(Status::permission_denied(
            "no operator key is configured (MCP_ADMIN_KEY)",
        )),
        _ => Err(Status::unauthenticated(
            "this call needs the operator key (MCP_ADMIN_KEY)",
        )),
    }
}

/// Whether an `authorization` header bears the operator key (compared in
/// constant time); never when no operator key is configured.
pub fn bears_operator_key(
    authorization: Option<&http::HeaderValue>,
    operator_key: Option<&str>,
) -> bool {
    match (operator_key, bearer(authorization)) {
        (Some(expected), Ok(token)) => bool::from(token.as_bytes().ct_eq(expected.as_bytes())),
        _ => false,
    }
}

fn bearer(header: Option<&http::HeaderValue>) -> Result<&str, Status> {
    let header = header
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <api key>"))?
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <api key>\""))
}
