//! The event store: appending a command's events together with their outbox rows, lag
//! "created" facts, the stream snapshot and the idempotency record (one transaction);
//! loading streams; migrations; connecting.

mod append;
pub mod db;
mod error;
mod events;
pub mod migrate;

use std::sync::Arc;

use deadpool_postgres::Pool;

pub use append::{CommandContext, Decided, Executed, IdempotencyRequest, NewEvent};
pub use db::{ConnectError, DbConfig};
pub use error::{StoreError, describe, unique_violation};
pub use events::{ENVELOPE_COLUMNS, Envelope};

use crate::telemetry::Metrics;

/// Handle to the event store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    metrics: Arc<Metrics>,
}

impl Store {
    /// Wraps a pool.
    pub fn new(pool: Pool, metrics: Arc<Metrics>) -> Self {
        Self { pool, metrics }
    }

    /// The underlying pool, for the read-side queries of other stages.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
