//! `authorization: Bearer <key>` on every call: the key names the tenant and
//! what it may do.

use mcp_store::{ApiKey, Scope, Store};
use subtle::ConstantTimeEq;
use tonic::{Request, Status};

/// The caller's key, checked by the store (from memory when it can).
pub async fn authenticate<T>(store: &Store, request: &Request<T>) -> Result<ApiKey, Status> {
    let token = bearer(request)?;
    match store.verify_api_key(token).await {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(Status::unauthenticated("the API key is unknown or revoked")),
        Err(e) => {
            tracing::error!(error = %e, "verifying an API key failed");
            Err(Status::unavailable("the key store is unavailable"))
        }
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

/// Whether the request carries the operator key (constant-time compare).
pub fn is_operator<T>(request: &Request<T>, operator_key: Option<&str>) -> Result<(), Status> {
    let token = bearer(request)?;
    match operator_key {
        Some(expected) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => Err(Status::unauthenticated(
            "this call needs the operator key (MCP_ADMIN_KEY)",
        )),
        None => Err(Status::permission_denied(
            "no operator key is configured (MCP_ADMIN_KEY)",
        )),
    }
}

fn bearer<T>(request: &Request<T>) -> Result<&str, Status> {
    let header = request
        .metadata()
        .get("authorization")
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
