//! Errors of the store. Business rejections and infrastructure failures never share a variant.

use crate::domain::{Rejection, ValidationError};

/// What can go wrong while executing a command or reading the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A business rule said no; nothing was appended.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The command's input was invalid; nothing was appended.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The Idempotency-Key was already used for a different request.
    #[error("idempotency key {0:?} was already used for a different request")]
    IdempotencyKeyReused(String),
    /// The caller's `If-Match` did not name the stream's version (`actual`, 0 when it does
    /// not exist); nothing was appended.
    #[error("the stream is at version {actual}, which the precondition does not name")]
    PreconditionFailed { actual: i64 },
    /// Concurrent writers kept winning the race for this stream past the retry bound.
    #[error("stream {0} stayed contended after {1} attempts")]
    Contended(String, u32),
    /// Postgres failed or is unreachable.
    #[error("database: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A stored row could not be read back (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The failure of a statement shared by several commands (a batched append).
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
    /// The process is shutting down; the append writer is gone.
    #[error("the store is shutting down")]
    Stopped,
}

impl StoreError {
    /// Whether the failure is the database's (503), not the caller's (4xx).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Shared(e) => e.is_unavailable(),
            Self::Database(_) | Self::Pool(_) | Self::Contended(..) | Self::Stopped => true,
            _ => false,
        }
    }

    /// The unique-violation constraint name, if this is one.
    pub fn violated_constraint(&self) -> Option<&str> {
        unique_violation(self.as_db())
    }

    fn as_db(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Database(e) => Some(e),
            Self::Shared(e) => e.as_db(),
            _ => None,
        }
    }
}

/// The constraint of a unique violation (SQLSTATE 23505), if `error` is one.
pub fn unique_violation(error: Option<&tokio_postgres::Error>) -> Option<&str> {
    let db = error?.as_db_error()?;
    (db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint())
        .flatten()
}

/// A tokio-postgres error with the server's message (its Display alone says only "db error").
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({}): {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}
