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
pub mod tls;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use append::{
    CommandContext, Decided, Executed, IdempotencyRequest, IfMatch, NewEvent, SNAPSHOT_EVERY,
};
pub use cache::StreamCache;
pub use db::{ConnectError, DbConfig};
pub use error::{StoreError, describe, unique_violation};
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
}

impl Store {
    /// Wraps a pool.
    pub fn new(pool: Pool, metrics: Arc<Metrics>) -> Self {
        Self {
            pool,
            metrics,
            streams: Arc::default(),
            appender: Arc::default(),
        }
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
