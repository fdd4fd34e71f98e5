//! Errors of the store. Business rejections and infrastructure failures never share a variant.

use crate::domain::{Rejection, ValidationError};

/// A failure of Postgres or of the connection pool: the one database error of every stage
/// (store, relay, projector, lag queries). Its message always carries Postgres's own message
/// and SQLSTATE; tokio-postgres's and deadpool's own Display say only "db error".
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement failed, or the connection broke.
    #[error("database: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// No pooled connection could be had.
    #[error("database pool: {}", describe_pool(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl DbError {
    /// The tokio-postgres error underneath, if any.
    pub fn as_postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Query(e) | Self::Pool(deadpool_postgres::PoolError::Backend(e)) => Some(e),
            Self::Pool(_) => None,
        }
    }
}

/// Implements `From` a tokio-postgres error and a pool error for an error type with a
/// `Db(DbError)` variant, so `?` works on both.
macro_rules! from_db_errors {
    ($error:ty) => {
        impl From<tokio_postgres::Error> for $error {
            fn from(e: tokio_postgres::Error) -> Self {
                Self::Db(e.into())
            }
        }
        impl From<deadpool_postgres::PoolError> for $error {
            fn from(e: deadpool_postgres::PoolError) -> Self {
                Self::Db(e.into())
            }
        }
    };
}
pub(crate) use from_db_errors;

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
    /// Postgres failed or is unreachable, or no pooled connection could be had.
    #[error(transparent)]
    Db(#[from] DbError),
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
            Self::Db(_) | Self::Contended(..) | Self::Stopped => true,
            _ => false,
        }
    }

    /// The unique-violation constraint name, if this is one.
    pub fn violated_constraint(&self) -> Option<&str> {
        unique_violation(self.as_db())
    }

    fn as_db(&self) -> Option<&tokio_postgres::Error> {
        match self {
            Self::Db(e) => e.as_postgres(),
            Self::Shared(e) => e.as_db(),
            _ => None,
        }
    }
}

from_db_errors!(StoreError);

/// The constraint of a unique violation (SQLSTATE 23505), if `error` is one.
pub fn unique_violation(error: Option<&tokio_postgres::Error>) -> Option<&str> {
    let db = error?.as_db_error()?;
    (db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint())
        .flatten()
}

/// A pool error with the server's message when Postgres refused the connection.
pub fn describe_pool(error: &deadpool_postgres::PoolError) -> String {
    match error {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        deadpool_postgres::PoolError::Timeout(kind) => {
            format!("no connection within the pool's timeout ({kind:?})")
        }
        other => other.to_string(),
    }
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
