//! Executing a command: decide against the stream's state (cached in memory, see
//! [`super::cache`]), then append the events (+ a snapshot now and then) + the idempotency
//! record in ONE prepared statement: one row per event. Commands appending at the same time
//! share that statement's transaction ([`super::batch`]).
//! The unique (stream_id, version) of the events is the concurrency check: when another
//! process appended to the stream since its state was cached, the insert fails, the state is
//! reloaded and the command decided again, a bounded number of times.

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::batch::Row;
use super::error::{DbError, unique_violation};
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
    /// Set when the caller sent `If-Match`: the versions the stream must be at.
    pub if_match: Option<IfMatch>,
}

/// An `If-Match` precondition on a stream's version (its ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the stream exists.
    Exists,
    /// The stream is at one of these versions.
    AnyOf(Vec<i64>),
}

impl IfMatch {
    /// Whether a stream at `version` (0: missing) meets the precondition.
    pub fn matches(&self, version: i64) -> bool {
        match self {
            Self::Exists => version > 0,
            Self::AnyOf(versions) => version > 0 && versions.contains(&version),
        }
    }
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

/// Streams are snapshotted in the append statement every this many events (and at creation);
/// loading a queue folds at most this many events onto its snapshot.
pub const SNAPSHOT_EVERY: i64 = 256;

const REMEMBER_REJECTION: &str = "INSERT INTO idempotency_keys (idempotency_key, request, stream_id, response) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1";

/// A key's record and whether it is older than the TTL (`$2` seconds; NULL: never). By
/// the primary key.
const FIND_IDEMPOTENT: &str = "SELECT request, response, \
     coalesce(created_at < clock_timestamp() - $2::float8 * interval '1 second', false) \
     FROM idempotency_keys WHERE idempotency_key = $1";
/// Removes a key's expired record, so that the request using it again appends (and can
/// store its own record under the key).
const FORGET_EXPIRED: &str = "DELETE FROM idempotency_keys WHERE idempotency_key = $1 \
     AND created_at < clock_timestamp() - $2::float8 * interval '1 second'";

/// One statement, one transaction: the events, a snapshot of the stream when `$12` is set,
/// and the idempotency record. The event row is the outbox: the relay reads it behind its
/// cursor. A unique violation on (stream_id, version) means another process appended to the
/// stream since its state was cached.
const APPEND: &str = "\
WITH ev AS (
    INSERT INTO waiting_room_events
        (event_id, stream_id, version, event_type, schema_version, occurred_at,
         correlation_id, causation_id, actor, payload)
    SELECT id, $2, v, t, $5, o, $6, $7, $8, p
      FROM unnest($1::uuid[], $3::int[], $4::text[], $9::timestamptz[], $10::jsonb[]) AS x(id, v, t, o, p)
    RETURNING global_position, version
), snapshot AS (
    INSERT INTO waiting_room_snapshots AS s (stream_id, version, state)
    SELECT $2, $11, $12 WHERE $12::jsonb IS NOT NULL
    ON CONFLICT (stream_id) DO UPDATE
       SET version = EXCLUDED.version, state = EXCLUDED.state, updated_at = clock_timestamp()
     WHERE s.version < EXCLUDED.version
), idem AS (
    INSERT INTO idempotency_keys (idempotency_key, request, stream_id, response)
    SELECT $13, $14, $2, $15 WHERE $13::text IS NOT NULL
)
-- Wake the relay if it sleeps (see sql/functions/relay.sql); the flag is read per event
-- row, after this transaction has its id.
SELECT ev.global_position,
       CASE WHEN (SELECT w.last_value FROM relay_wakeup w WHERE ev.global_position > 0) = 1
            THEN pg_notify('waiting_room_outbox', '') END IS NULL
  FROM ev ORDER BY ev.version";

const LOAD_SNAPSHOT: &str =
    "SELECT version, state FROM waiting_room_snapshots WHERE stream_id = $1";
const LOAD_TAIL: &str = "SELECT version, event_type, payload FROM waiting_room_events \
     WHERE stream_id = $1 AND version > $2 ORDER BY version";

/// The clock, truncated to what Postgres stores (microseconds), so the write model and the
/// read models order patients identically.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// How one attempt ended.
enum Attempt<T> {
    Done(Executed<T>),
    /// Another process appended to the stream since this one cached it (the insert hit the
    /// unique (stream_id, version)).
    Stale,
}

impl Store {
    /// Executes `command` against stream `stream_id`; `respond` builds the response from the
    /// decision (it is stored with the Idempotency-Key, if any, in the append statement).
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
        // A key older than the TTL is not honoured, even before the retention job has
        // deleted it: the retry is a new request.
        let ttl = Some(self.idempotency_ttl.as_secs_f64());
        if let Some(idem) = &ctx.idempotency {
            let client = self.pool.get().await?;
            if let Some(done) = find_idempotent(&client, idem, ttl).await? {
                return Ok(done);
            }
        }
        let slot = self.streams.slot(stream_id);
        let mut cached = slot.lock().await;
        if let Some(idem) = &ctx.idempotency {
            // A request with the same key may have finished while we waited for the slot.
            let client = self.pool.get().await?;
            if let Some(done) = find_idempotent(&client, idem, ttl).await? {
                return Ok(done);
            }
        }
        for attempt in 1..=MAX_ATTEMPTS {
            let result = self
                .try_execute(&mut cached, stream_id, command, ctx, &respond)
                .await;
            match result {
                Ok(Attempt::Done(done)) => return Ok(done),
                Ok(Attempt::Stale) => {
                    self.metrics.conflict_retries.inc();
                    tracing::debug!(
                        stream_id,
                        attempt,
                        "stream moved on; reloading and re-deciding"
                    );
                }
                Err(StoreError::Db(DbError::Query(e)))
                    if unique_violation(Some(&e)) == Some("idempotency_keys_pkey") =>
                {
                    // A concurrent request with the same key (in another process) won; answer
                    // as it did (its response, or its rejection).
                    let idem = ctx.idempotency.as_ref().ok_or(StoreError::from(e))?;
                    let client = self.pool.get().await?;
                    // It has just been stored: no TTL applies to the answer.
                    return find_idempotent(&client, idem, None)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()));
                }
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Contended(stream_id.to_owned(), MAX_ATTEMPTS))
    }

    async fn try_execute<T, F>(
        &self,
        cached: &mut Option<QueueState>,
        stream_id: &str,
        command: &Command,
        ctx: &CommandContext,
        respond: &F,
    ) -> Result<Attempt<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(&Decided<'_>) -> T,
    {
        // The state leaves the cache while the command is in flight and goes back only once
        // its append is known to have committed (or nothing was decided). This future can be
        // dropped at any await (a client that hangs up cancels its request): the cache then
        // stays empty and the next command reloads from the store. Mutating the cached state
        // in place instead left it ahead of the store when an append was cancelled, and the
        // next command appended past a missing version (found by the fault suite).
        let mut state = match cached.take() {
            Some(state) => state,
            None => {
                let client = self.pool.get().await?;
                load(&client, stream_id).await?
            }
        };
        if let Some(condition) = &ctx.if_match
            && !condition.matches(state.version)
        {
            // The cache may trail appends of another process: ask the store before refusing.
            let client = self.pool.get().await?;
            state = load(&client, stream_id).await?;
            if !condition.matches(state.version) {
                let actual = state.version;
                *cached = Some(state);
                return Err(StoreError::PreconditionFailed { actual });
            }
        }
        let at = now();
        let decided = match state.decide(command, at) {
            Ok(events) => events,
            Err(rejection) => {
                *cached = Some(state);
                // Remember the answer, so a retry with the same key gets it again even if the
                // queue has changed since (the contract: the first response, nothing appended).
                if let Some(idem) = &ctx.idempotency {
                    let client = self.pool.get().await?;
                    let stored = serde_json::json!({ "rejected": rejection });
                    let inserted = client
                        .query_opt(
                            REMEMBER_REJECTION,
                            &[&idem.key, &idem.request, &stream_id, &stored],
                        )
                        .await?;
                    if inserted.is_none() {
                        // Another process stored an answer for this key first.
                        if let Some(done) = find_idempotent(&client, idem, None).await? {
                            return Ok(Attempt::Done(done));
                        }
                    }
                }
                return Err(rejection.into());
            }
        };
        let expected = state.version;
        // The state moves on; it returns to the cache only after a successful append.
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
        let snapshot =
            if expected == 0 || state.version / SNAPSHOT_EVERY != expected / SNAPSHOT_EVERY {
                Some(serde_json::to_value(&state).map_err(|e| {
                    StoreError::Corrupt(format!("snapshot does not serialise: {e}"))
                })?)
            } else {
                None
            };
        let appended = match (&ctx.idempotency, events.as_slice()) {
            // The common case goes with whatever other commands are appending (batch.rs).
            (None, [event]) => {
                self.appender()
                    .append(Row {
                        event_id: event.event_id,
                        stream_id: stream_id.to_owned(),
                        version: event.version,
                        event_type: event.event.event_type(),
                        occurred_at: at,
                        correlation_id: ctx.correlation_id.clone(),
                        causation_id: ctx.causation_id.clone(),
                        actor: ctx.actor.clone(),
                        payload: event.event.payload(),
                        snapshot,
                    })
                    .await
            }
            _ => {
                let client = self.pool.get().await?;
                append(
                    &client, &state, stream_id, &events, ctx, &response, snapshot, at,
                )
                .await
            }
        };
        match appended {
            Ok(true) => {
                *cached = Some(state);
                for e in &events {
                    self.metrics
                        .events_appended
                        .get_or_create(&crate::telemetry::EventTypeLabel::new(e.event.event_type()))
                        .inc();
                }
                Ok(Attempt::Done(Executed {
                    response,
                    replayed: false,
                }))
            }
            // The cache stays empty: the next attempt reloads the stream.
            Ok(false) => Ok(Attempt::Stale),
            Err(e) => Err(e),
        }
    }
}

/// The one-statement append for `events` with an Idempotency-Key (or several events):
/// `Ok(false)` when another process appended to the stream first.
#[allow(clippy::too_many_arguments)]
async fn append<T: Serialize>(
    client: &deadpool_postgres::Client,
    state: &QueueState,
    stream_id: &str,
    events: &[NewEvent],
    ctx: &CommandContext,
    response: &T,
    snapshot: Option<serde_json::Value>,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let response_json = serde_json::to_value(response)
        .map(|r| serde_json::json!({ "response": r }))
        .map_err(|e| StoreError::Corrupt(format!("response does not serialise: {e}")))?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let versions: Vec<i32> = events.iter().map(|e| e.version).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|_| at).collect();
    let payloads: Vec<serde_json::Value> = events.iter().map(|e| e.event.payload()).collect();
    let version = i32::try_from(state.version).unwrap_or(i32::MAX);
    let (key, request) = match &ctx.idempotency {
        Some(i) => (Some(i.key.as_str()), Some(&i.request)),
        None => (None, None),
    };
    let statement = client.prepare_cached(APPEND).await?;
    let result = client
        .query(
            &statement,
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
                &Some(response_json),
            ],
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if unique_violation(Some(&e)) == Some("waiting_room_events_stream_version") => {
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// A stream's state: its snapshot plus the events after it (a missing stream is empty).
async fn load(
    client: &deadpool_postgres::Client,
    stream_id: &str,
) -> Result<QueueState, StoreError> {
    let Some(row) = client.query_opt(LOAD_SNAPSHOT, &[&stream_id]).await? else {
        return Ok(QueueState::default());
    };
    let snapshot_version: i32 = row.get(0);
    let mut state: QueueState = serde_json::from_value(row.get(1))
        .map_err(|e| StoreError::Corrupt(format!("snapshot of {stream_id}: {e}")))?;
    state.version = i64::from(snapshot_version);
    for row in client
        .query(LOAD_TAIL, &[&stream_id, &snapshot_version])
        .await?
    {
        let version: i32 = row.get(0);
        if i64::from(version) != state.version + 1 {
            return Err(StoreError::Corrupt(format!(
                "stream {stream_id} jumps from version {} to {version}",
                state.version
            )));
        }
        let event = Event::decode(row.get(1), row.get(2))
            .map_err(|e| StoreError::Corrupt(format!("stream {stream_id} v{version}: {e}")))?;
        state.apply(&event);
    }
    Ok(state)
}

/// The stored answer for `idem`'s key. With `ttl_seconds`, a record older than that counts
/// as absent and is deleted.
async fn find_idempotent<T, C>(
    client: &C,
    idem: &IdempotencyRequest,
    ttl_seconds: Option<f64>,
) -> Result<Option<Executed<T>>, StoreError>
where
    T: DeserializeOwned,
    C: deadpool_postgres::GenericClient,
{
    let Some(row) = client
        .query_opt(FIND_IDEMPOTENT, &[&idem.key, &ttl_seconds])
        .await?
    else {
        return Ok(None);
    };
    if row.get::<_, bool>(2) {
        client
            .execute(FORGET_EXPIRED, &[&idem.key, &ttl_seconds])
            .await?;
        return Ok(None);
    }
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
