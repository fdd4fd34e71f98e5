//! The event store: appending a command's events together with the stream row's version
//! and the idempotency record (one statement); the event rows are the outbox. The write
//! model cached per stream; loading streams; migrations; connecting.

mod append;
mod batch;
mod cache;
pub mod db;
mod error;
mod events;
pub mod migrate;
pub mod retention;
pub mod tls;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use append::{
    CommandContext, Decided, Executed, IdempotencyRequest, IfMatch, NewEvent, SNAPSHOT_EVERY,
};
pub use cache::StreamCache;
pub use db::{ConnectError, DbConfig};
pub(crate) use error::from_db_errors;
pub use error::{DbError, StoreError, describe, describe_pool, unique_violation};
pub use events::{ENVELOPE_COLUMNS, Envelope};

use crate::telemetry::Metrics;

/// Handle to the event store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    metrics: Arc<Metrics>,
    streams: Arc<StreamCache>,
    /// Started on the first append, on the runtime that makes it.
    appender: Arc<std::sync::OnceLock<batch::Appender>>,
    /// How long an Idempotency-Key is honoured (`IDEMPOTENCY_TTL`).
    idempotency_ttl: std::time::Duration,
}

impl Store {
    /// Wraps a pool; Idempotency-Keys are honoured for [`retention::DEFAULT_TTL`].
    pub fn new(pool: Pool, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            metrics,
            streams: Arc::default(),
            appender: Arc::default(),
            idempotency_ttl: retention::DEFAULT_TTL,
        }
    }

    /// The same store honouring Idempotency-Keys for `ttl`.
    pub fn with_idempotency_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// How long an Idempotency-Key is honoured.
    pub fn idempotency_ttl(&self) -> std::time::Duration {
        self.idempotency_ttl
    }

    fn appender(&self) -> &batch::Appender {
        self.appender
            .get_or_init(|| batch::Appender::start(self.pool.clone()))
    }

    /// The underlying pool, for the read-side queries of other stages.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
