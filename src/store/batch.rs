//! Group commit in the process: the appends of concurrent commands (on different streams) go
//! to Postgres together, as one INSERT in one transaction. Under load a transaction's fixed
//! cost (round trip, commit, WAL flush, wake-ups) was most of an append's; shared by the
//! appends waiting at that moment it nearly vanishes, while a lone append is written at once.
//!
//! A coordinator task takes every queued append each time one of [`IN_FLIGHT`] statement slots
//! is free. Each append is all-or-nothing on its own: `ON CONFLICT (stream_id, version) DO
//! NOTHING` leaves out an event another process appended first, and that command alone is
//! decided again. Only single-event commands without an Idempotency-Key come here (the rest
//! take the one-statement path in `append.rs`, where the key and the events commit together).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::StoreError;
use crate::domain::SCHEMA_VERSION;

/// Statements in flight at once.
pub const IN_FLIGHT: usize = 2;
/// Most appends per statement.
pub const MAX_BATCH: usize = 256;

/// One command's event (and the stream's snapshot, when one is due).
#[derive(Debug)]
pub struct Row {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: i32,
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: String,
    pub actor: String,
    pub payload: serde_json::Value,
    pub snapshot: Option<serde_json::Value>,
}

/// `Ok(true)`: appended; `Ok(false)`: the stream already had that version (another
/// process appended first).
type Reply = Result<bool, StoreError>;

struct Job {
    row: Row,
    reply: oneshot::Sender<Reply>,
}

const INSERT: &str = "\
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[],
                         $6::text[], $7::text[], $8::text[], $9::jsonb[], $11::jsonb[])
                  AS x(id, stream, v, t, o, corr, caus, actor, p, snapshot)
), ev AS (
    INSERT INTO waiting_room_events
        (event_id, stream_id, version, event_type, schema_version, occurred_at,
         correlation_id, causation_id, actor, payload)
    SELECT id, stream, v, t, $10, o, corr, caus, actor, p FROM input
        ON CONFLICT (stream_id, version) DO NOTHING
    RETURNING event_id, global_position
), snapshot AS (
    INSERT INTO waiting_room_snapshots AS s (stream_id, version, state)
    SELECT i.stream, i.v, i.snapshot FROM input i JOIN ev ON ev.event_id = i.id
     WHERE i.snapshot IS NOT NULL
    ON CONFLICT (stream_id) DO UPDATE
       SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = clock_timestamp()
     WHERE s.version < EXCLUDED.version
)
-- Wake the relay if it sleeps (see sql/functions/relay.sql); the flag is read per event
-- row, after this transaction has its id.
SELECT ev.event_id,
       CASE WHEN (SELECT w.last_value FROM relay_wakeup w WHERE ev.global_position > 0) = 1
            THEN pg_notify('waiting_room_outbox', '') END IS NULL
  FROM ev";

/// Handle to the batching writer of one process.
#[derive(Clone)]
pub struct Appender {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Appender {
    /// Starts the writer on the current runtime.
    pub fn start(pool: Pool) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(coordinate(pool, queue));
        Self { jobs }
    }

    /// Appends `row` with whatever else is waiting; see [`Reply`].
    pub async fn append(&self, row: Row) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { row, reply })
            .map_err(|_| StoreError::Stopped)?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }
}

async fn coordinate(pool: Pool, mut queue: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            write(&pool, jobs).await;
            drop(slot);
        });
    }
}

async fn write(pool: &Pool, jobs: Vec<Job>) {
    let result = insert(pool, &jobs).await;
    match result {
        Ok(inserted) => {
            for job in jobs {
                let _ = job.reply.send(Ok(inserted.contains(&job.row.event_id)));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Shared(e.clone())));
            }
        }
    }
}

/// The ids of the events that were inserted.
async fn insert(pool: &Pool, jobs: &[Job]) -> Result<Vec<Uuid>, StoreError> {
    let rows = jobs.iter().map(|j| &j.row);
    let ids: Vec<Uuid> = rows.clone().map(|r| r.event_id).collect();
    let streams: Vec<&str> = rows.clone().map(|r| r.stream_id.as_str()).collect();
    let versions: Vec<i32> = rows.clone().map(|r| r.version).collect();
    let types: Vec<&str> = rows.clone().map(|r| r.event_type).collect();
    let times: Vec<DateTime<Utc>> = rows.clone().map(|r| r.occurred_at).collect();
    let correlations: Vec<&str> = rows.clone().map(|r| r.correlation_id.as_str()).collect();
    let causations: Vec<&str> = rows.clone().map(|r| r.causation_id.as_str()).collect();
    let actors: Vec<&str> = rows.clone().map(|r| r.actor.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = rows.clone().map(|r| &r.payload).collect();
    let snapshots: Vec<Option<&serde_json::Value>> = rows.map(|r| r.snapshot.as_ref()).collect();
    let client = pool.get().await?;
    let statement = client.prepare_cached(INSERT).await?;
    let inserted = client
        .query(
            &statement,
            &[
                &ids,
                &streams,
                &versions,
                &types,
                &times,
                &correlations,
                &causations,
                &actors,
                &payloads,
                &SCHEMA_VERSION,
                &snapshots,
            ],
        )
        .await?;
    Ok(inserted.iter().map(|r| r.get(0)).collect())
}
