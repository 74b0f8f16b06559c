//! Errors as gRPC statuses (docs/architecture.md, "Errors"): input errors name the
//! field, internal causes are logged and never sent.

use mcp_flow::ContextError;
use mcp_registry::RegistryError;
use mcp_store::StoreError;
use tonic::Status;

use crate::auth::with_request_id;
use crate::engine::EngineError;

pub fn from_store(e: StoreError) -> Status {
    match e {
        StoreError::Invalid { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        StoreError::InvalidFlow(report) => {
            Status::invalid_argument(format!("definition: {report}"))
        }
        StoreError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::Database(_) | StoreError::Migration(_) => {
            tracing::error!(error = %e, "database failure");
            Status::unavailable(with_request_id("the database is unavailable"))
        }
        StoreError::Unavailable(reason) => {
            Status::unavailable(format!("the database is unavailable: {reason}"))
        }
        StoreError::Corrupt(_) => internal(&e),
    }
}

pub fn from_registry(e: RegistryError) -> Status {
    match e {
        RegistryError::Store(e) => from_store(e),
        RegistryError::Plugin(e) => Status::invalid_argument(format!("component: {e}")),
        RegistryError::Policy(e) => Status::invalid_argument(e.to_string()),
        RegistryError::Busy(_) | RegistryError::Quota(_) => {
            Status::resource_exhausted(e.to_string())
        }
        RegistryError::StalePolicy { .. } => internal(&e),
    }
}

pub fn from_context(e: ContextError) -> Status {
    match e {
        ContextError::LockTimeout { .. } => Status::resource_exhausted(e.to_string()),
        ContextError::LockLost { .. } | ContextError::Conflict { .. } => {
            Status::aborted(e.to_string())
        }
        ContextError::BadKey { .. } => Status::invalid_argument(e.to_string()),
        ContextError::Unavailable(_) => {
            tracing::error!(error = %e, "context store failure");
            Status::unavailable(with_request_id("the context store is unavailable"))
        }
        ContextError::Corrupt { .. } => internal(&e),
    }
}

pub fn from_engine(e: EngineError) -> Status {
    match e {
        EngineError::Invalid { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        EngineError::NotFound(message) => Status::not_found(message),
        EngineError::Precondition(message) => Status::failed_precondition(message),
        EngineError::Context(e) => from_context(e),
        EngineError::Store(e) => from_store(e),
        EngineError::Plugins(e) => from_registry(e),
        EngineError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        EngineError::Busy(_) => Status::resource_exhausted(e.to_string()),
    }
}

fn internal(e: &dyn std::error::Error) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(with_request_id("internal error"))
}
