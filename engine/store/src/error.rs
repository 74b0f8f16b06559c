//! What can go wrong in the store, in terms a caller can act on.

use mcp_flow::Report;

/// One error for every repository operation. Input errors name what is wrong
/// and are returned before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A field of a request is malformed (an id, a name, a scope, JSON).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },

    /// The flow does not validate, or uses plugins the tenant lacks or has
    /// of another world; the report holds every problem with its path.
    #[error("the flow is invalid: {}", first_error(.0))]
    InvalidFlow(Report),

    #[error("{what} {id} already exists")]
    AlreadyExists { what: &'static str, id: String },

    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    /// The database is unreachable or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),

    /// The database is known to be away, or cannot take more now: refused
    /// at once rather than after a wait.
    #[error("database unavailable: {0}")]
    Unavailable(String),

    #[error("migrating the database: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// Something stored cannot be read back (a bug or manual tampering).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> StoreError {
        StoreError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> StoreError {
        StoreError::NotFound {
            what,
            id: id.into(),
        }
    }
}

fn first_error(report: &Report) -> String {
    let errors = report.errors().count();
    match report.errors().next() {
        Some(issue) if errors > 1 => format!(
            "{}: {} (and {} more)",
            issue.path,
            issue.message,
            errors - 1
        ),
        Some(issue) => format!("{}: {}", issue.path, issue.message),
        None => "no errors".into(),
    }
}
