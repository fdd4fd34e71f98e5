//! Executing a command: load the stream's snapshot under a row lock, decide, and append
//! events + outbox rows + lag "created" facts + snapshot + idempotency record in ONE statement
//! (hence one transaction). A unique violation on (stream, version) is the concurrency
//! conflict: re-read and re-decide, a bounded number of times.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::unique_violation;
use super::{Store, StoreError};
use crate::domain::{Command, Event, QueueState, Rejection, SCHEMA_VERSION};

/// How often a command is re-decided after losing a race before giving up (503).
const MAX_ATTEMPTS: u32 = 8;

/// Who asked, and how to recognise a retry.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Stored with each event and sent as the AMQP correlation id.
    pub correlation_id: String,
    /// What caused the events: the command's id (its Idempotency-Key when one is given).
    pub causation_id: String,
    /// Who issued the command.
    pub actor: String,
    /// Set when the caller sent an Idempotency-Key.
    pub idempotency: Option<IdempotencyRequest>,
}

/// An Idempotency-Key and the request it was sent with; a retry must send the same request.
#[derive(Debug, Clone)]
pub struct IdempotencyRequest {
    pub key: String,
    pub request: serde_json::Value,
}

/// An event about to be appended, with its id and stream version.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub version: i32,
    pub event: Event,
}

/// What a command decided, handed to the caller to build its response before the append.
#[derive(Debug)]
pub struct Decided<'a> {
    /// The stream's state after the new events.
    pub state: &'a QueueState,
    pub events: &'a [NewEvent],
}

/// A command's response and whether it was replayed from an earlier request with the same key.
#[derive(Debug)]
pub struct Executed<T> {
    pub response: T,
    pub replayed: bool,
}

const LOAD_FOR_UPDATE: &str =
    "SELECT version, state FROM waiting_room_streams WHERE stream_id = $1 FOR UPDATE";

const REMEMBER_REJECTION: &str = "INSERT INTO idempotency_keys (idempotency_key, request, stream_id, response) VALUES ($1, $2, $3, $4)";

const FIND_IDEMPOTENT: &str =
    "SELECT request, response FROM idempotency_keys WHERE idempotency_key = $1";

/// One statement, one transaction: events, outbox, lag facts, snapshot and idempotency record.
const APPEND: &str = "\
WITH ev AS (
    INSERT INTO waiting_room_events
        (event_id, stream_id, version, event_type, schema_version, occurred_at,
         correlation_id, causation_id, actor, payload)
    SELECT id, $2, v, t, $5, o, $6, $7, $8, p
      FROM unnest($1::uuid[], $3::int[], $4::text[], $9::timestamptz[], $10::jsonb[]) AS x(id, v, t, o, p)
    RETURNING global_position, event_id, stream_id, version, event_type
), outbox AS (
    INSERT INTO waiting_room_outbox (global_position, event_id, stream_id, event_type)
    SELECT global_position, event_id, stream_id, event_type FROM ev
), lag AS (
    INSERT INTO event_processing_lag (event_id, global_position, stream_id, version, event_type)
    SELECT event_id, global_position, stream_id, version, event_type FROM ev
), snapshot AS (
    INSERT INTO waiting_room_streams (stream_id, version, state) VALUES ($2, $11, $12)
    ON CONFLICT (stream_id) DO UPDATE
       SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = clock_timestamp()
), idem AS (
    INSERT INTO idempotency_keys (idempotency_key, request, stream_id, response)
    SELECT $13, $14, $2, $15 WHERE $13::text IS NOT NULL
)
SELECT event_id, global_position FROM ev ORDER BY version";

/// The clock, truncated to what Postgres stores (microseconds), so the snapshot and the
/// read models order patients identically.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl Store {
    /// Executes `command` against stream `stream_id`; `respond` builds the response from the
    /// decision (it is stored with the Idempotency-Key, if any, in the append transaction).
    pub async fn execute<T, F>(
        &self,
        stream_id: &str,
        command: &Command,
        ctx: &CommandContext,
        respond: F,
    ) -> Result<Executed<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&Decided<'_>) -> T,
    {
        if let Some(idem) = &ctx.idempotency {
            let client = self.pool.get().await?;
            if let Some(done) = find_idempotent(&client, idem).await? {
                return Ok(done);
            }
        }
        for attempt in 1..=MAX_ATTEMPTS {
            match self.try_execute(stream_id, command, ctx, &respond).await {
                Err(StoreError::Database(e))
                    if unique_violation(Some(&e)) == Some("waiting_room_events_stream_version") =>
                {
                    self.metrics.conflict_retries.inc();
                    tracing::debug!(
                        stream_id,
                        attempt,
                        "concurrent append; re-reading and re-deciding"
                    );
                }
                Err(StoreError::Database(e))
                    if unique_violation(Some(&e)) == Some("idempotency_keys_pkey") =>
                {
                    // A concurrent request with the same key won; answer as it did (its
                    // response, or its rejection).
                    let idem = ctx.idempotency.as_ref().ok_or(StoreError::Database(e))?;
                    let client = self.pool.get().await?;
                    return find_idempotent(&client, idem)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()));
                }
                other => return other,
            }
        }
        Err(StoreError::Contended(stream_id.to_owned(), MAX_ATTEMPTS))
    }

    async fn try_execute<T, F>(
        &self,
        stream_id: &str,
        command: &Command,
        ctx: &CommandContext,
        respond: &F,
    ) -> Result<Executed<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&Decided<'_>) -> T,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The row lock serialises writers of one queue, so most races never become conflicts;
        // the unique (stream, version) constraint still catches the rest (e.g. two creates).
        let row = tx.query_opt(LOAD_FOR_UPDATE, &[&stream_id]).await?;
        let mut state: QueueState = match row {
            Some(row) => {
                let version: i32 = row.get(0);
                let mut state: QueueState = serde_json::from_value(row.get(1))
                    .map_err(|e| StoreError::Corrupt(format!("snapshot of {stream_id}: {e}")))?;
                state.version = i64::from(version);
                state
            }
            None => QueueState::default(),
        };
        if let Some(idem) = &ctx.idempotency {
            // A request with the same key may have committed while we waited for the lock.
            if let Some(done) = find_idempotent(&tx, idem).await? {
                return Ok(done);
            }
        }

        let at = now();
        let decided = match state.decide(command, at) {
            Ok(events) => events,
            Err(rejection) => {
                // Remember the answer, so a retry with the same key gets it again even if the
                // queue has changed since (the contract: the first response, nothing appended).
                if let Some(idem) = &ctx.idempotency {
                    let stored = serde_json::json!({ "rejected": rejection });
                    tx.execute(
                        REMEMBER_REJECTION,
                        &[&idem.key, &idem.request, &stream_id, &stored],
                    )
                    .await?;
                    tx.commit().await?;
                }
                return Err(rejection.into());
            }
        };
        let mut events = Vec::with_capacity(decided.len());
        for event in decided {
            state.apply(&event);
            let version = i32::try_from(state.version).map_err(|_| {
                StoreError::Corrupt(format!("stream {stream_id} exceeded i32 versions"))
            })?;
            events.push(NewEvent {
                event_id: Uuid::now_v7(),
                version,
                event,
            });
        }
        let response = respond(&Decided {
            state: &state,
            events: &events,
        });
        let response_json = serde_json::to_value(&response)
            .map(|r| serde_json::json!({ "response": r }))
            .map_err(|e| StoreError::Corrupt(format!("response does not serialise: {e}")))?;

        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let versions: Vec<i32> = events.iter().map(|e| e.version).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event.event_type()).collect();
        let times: Vec<DateTime<Utc>> = events.iter().map(|_| at).collect();
        let payloads: Vec<serde_json::Value> = events.iter().map(|e| e.event.payload()).collect();
        let snapshot = serde_json::to_value(&state)
            .map_err(|e| StoreError::Corrupt(format!("snapshot does not serialise: {e}")))?;
        let version = i32::try_from(state.version).unwrap_or(i32::MAX);
        let (key, request) = match &ctx.idempotency {
            Some(i) => (Some(i.key.as_str()), Some(&i.request)),
            None => (None, None),
        };
        tx.query(
            APPEND,
            &[
                &ids,
                &stream_id,
                &versions,
                &types,
                &SCHEMA_VERSION,
                &ctx.correlation_id,
                &ctx.causation_id,
                &ctx.actor,
                &times,
                &payloads,
                &version,
                &snapshot,
                &key,
                &request,
                &response_json,
            ],
        )
        .await?;
        tx.commit().await?;
        for e in &events {
            self.metrics
                .events_appended
                .get_or_create(&crate::telemetry::EventTypeLabel::new(e.event.event_type()))
                .inc();
        }
        Ok(Executed {
            response,
            replayed: false,
        })
    }
}

async fn find_idempotent<T, C>(
    client: &C,
    idem: &IdempotencyRequest,
) -> Result<Option<Executed<T>>, StoreError>
where
    T: DeserializeOwned,
    C: deadpool_postgres::GenericClient,
{
    let Some(row) = client.query_opt(FIND_IDEMPOTENT, &[&idem.key]).await? else {
        return Ok(None);
    };
    let request: serde_json::Value = row.get(0);
    if request != idem.request {
        return Err(StoreError::IdempotencyKeyReused(idem.key.clone()));
    }
    let corrupt = |e: serde_json::Error| {
        StoreError::Corrupt(format!("stored response for key {:?}: {e}", idem.key))
    };
    let mut stored: serde_json::Value = row.get(1);
    if let Some(rejected) = stored.get_mut("rejected") {
        let rejection: Rejection = serde_json::from_value(rejected.take()).map_err(corrupt)?;
        return Err(StoreError::Rejected(rejection));
    }
    let response = serde_json::from_value(
        stored
            .get_mut("response")
            .map(serde_json::Value::take)
            .unwrap_or_default(),
    )
    .map_err(corrupt)?;
    Ok(Some(Executed {
        response,
        replayed: true,
    }))
}
