//! Queries over the read models the projector maintains, for the API (and psql users,
//! who can run the same SQL).

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::Row;

use super::ProjectorError;

/// A row of `waiting_queue_view`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub queue_id: String,
    pub queue_name: String,
    pub max_capacity: i32,
    pub max_no_shows: i32,
    pub current_patient_count: i32,
    pub waiting_count: i32,
    pub called_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub updated_by_event_version: i32,
}

/// A row of `waiting_patients_view`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientRow {
    pub patient_id: String,
    pub patient_name: String,
    pub priority: String,
    pub consultation_type: String,
    pub notes: Option<String>,
    pub status: String,
    pub position_in_queue: Option<i32>,
    pub queued_at: DateTime<Utc>,
    pub no_show_count: i32,
    pub checked_in_at: DateTime<Utc>,
    pub called_at: Option<DateTime<Utc>>,
    pub consulting_room: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
    pub updated_by_event_version: i32,
}

const QUEUE_COLUMNS: &str = "queue_id, queue_name, max_capacity, max_no_shows, current_patient_count, \
     waiting_count, called_count, created_at, updated_at, updated_by_event_version";

/// Active patients in call order: called ones first (earliest call first), then waiting by position.
const ACTIVE_PATIENTS: &str = "SELECT patient_id, patient_name, priority, consultation_type, notes, status, \
     position_in_queue, queued_at, no_show_count, checked_in_at, called_at, consulting_room, completed_at, \
     updated_by_event_version FROM waiting_patients_view \
     WHERE queue_id = $1 AND status IN ('WAITING', 'CALLED') \
     ORDER BY status = 'WAITING', called_at, position_in_queue";

fn queue_row(r: &Row) -> QueueRow {
    QueueRow {
        queue_id: r.get(0),
        queue_name: r.get(1),
        max_capacity: r.get(2),
        max_no_shows: r.get(3),
        current_patient_count: r.get(4),
        waiting_count: r.get(5),
        called_count: r.get(6),
        created_at: r.get(7),
        updated_at: r.get(8),
        updated_by_event_version: r.get(9),
    }
}

fn patient_row(r: &Row) -> PatientRow {
    PatientRow {
        patient_id: r.get(0),
        patient_name: r.get(1),
        priority: r.get(2),
        consultation_type: r.get(3),
        notes: r.get(4),
        status: r.get(5),
        position_in_queue: r.get(6),
        queued_at: r.get(7),
        no_show_count: r.get(8),
        checked_in_at: r.get(9),
        called_at: r.get(10),
        consulting_room: r.get(11),
        completed_at: r.get(12),
        updated_by_event_version: r.get(13),
    }
}

/// Every queue, by name.
pub async fn list_queues(pool: &Pool) -> Result<Vec<QueueRow>, ProjectorError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {QUEUE_COLUMNS} FROM waiting_queue_view ORDER BY queue_name, queue_id"
            ),
            &[],
        )
        .await?;
    Ok(rows.iter().map(queue_row).collect())
}

/// Whether the read model has the queue.
pub async fn queue_exists(pool: &Pool, queue_id: &str) -> Result<bool, ProjectorError> {
    let client = pool.get().await?;
    Ok(client
        .query_opt(
            "SELECT 1 FROM waiting_queue_view WHERE queue_id = $1",
            &[&queue_id],
        )
        .await?
        .is_some())
}

/// One queue and its active patients in call order, or `None` when the read model has no such queue.
pub async fn queue_with_patients(
    pool: &Pool,
    queue_id: &str,
) -> Result<Option<(QueueRow, Vec<PatientRow>)>, ProjectorError> {
    let client = pool.get().await?;
    let Some(queue) = client
        .query_opt(
            &format!("SELECT {QUEUE_COLUMNS} FROM waiting_queue_view WHERE queue_id = $1"),
            &[&queue_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let patients = client.query(ACTIVE_PATIENTS, &[&queue_id]).await?;
    Ok(Some((
        queue_row(&queue),
        patients.iter().map(patient_row).collect(),
    )))
}

/// A parked stream of a projection.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedStream {
    pub stream_id: String,
    pub parked_version: Option<i32>,
    pub error: Option<String>,
    pub parked_at: Option<DateTime<Utc>>,
}

/// How far one projection is behind the event store.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionHealth {
    pub name: String,
    pub streams: i64,
    pub streams_behind: i64,
    pub events_behind: i64,
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Every parked stream, counted (the partial index `projection_checkpoints_parked`).
    pub parked_count: i64,
    /// The oldest parked streams, at most [`PARKED_LIST`].
    pub parked: Vec<ParkedStream>,
}

/// How many parked streams a health report lists (it counts them all).
pub const PARKED_LIST: i64 = 100;

/// Streams come from the snapshots (every stream has one from its creation); each stream's
/// head is one backward index lookup.
const HEALTH: &str = "\
WITH heads AS (
    SELECT s.stream_id, m.top
      FROM waiting_room_snapshots s
     CROSS JOIN LATERAL (SELECT max(e.version) AS top FROM waiting_room_events e
                          WHERE e.stream_id = s.stream_id) m
)
SELECT p.name,
       (SELECT count(*) FROM heads),
       b.streams_behind,
       b.events_behind,
       (SELECT max(updated_at) FROM projection_checkpoints c WHERE c.projection = p.name),
       (SELECT count(*) FROM projection_checkpoints c
         WHERE c.projection = p.name AND c.status = 'PARKED')
  FROM projections p
 CROSS JOIN LATERAL (
       SELECT count(*) AS streams_behind,
              coalesce(sum(h.top - coalesce(c.last_version, 0)), 0)::bigint AS events_behind
         FROM heads h
         LEFT JOIN projection_checkpoints c ON c.projection = p.name AND c.stream_id = h.stream_id
        WHERE coalesce(c.last_version, 0) < h.top) b
 ORDER BY p.name";

const PARKED: &str = "SELECT stream_id, parked_version, last_error, parked_at FROM projection_checkpoints \
     WHERE projection = $1 AND status = 'PARKED' ORDER BY parked_at, stream_id LIMIT $2";

/// Checkpoint health of every registered projection.
pub async fn projection_health(pool: &Pool) -> Result<Vec<ProjectionHealth>, ProjectorError> {
    let client = pool.get().await?;
    let mut out = Vec::new();
    for r in client.query(HEALTH, &[]).await? {
        let name: String = r.get(0);
        let parked = client
            .query(PARKED, &[&name, &PARKED_LIST])
            .await?
            .iter()
            .map(|p| ParkedStream {
                stream_id: p.get(0),
                parked_version: p.get(1),
                error: p.get(2),
                parked_at: p.get(3),
            })
            .collect();
        out.push(ProjectionHealth {
            name,
            streams: r.get(1),
            streams_behind: r.get(2),
            events_behind: r.get(3),
            last_applied_at: r.get(4),
            parked_count: r.get(5),
            parked,
        });
    }
    Ok(out)
}
