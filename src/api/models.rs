//! Request and response bodies of the API (camelCase JSON).

use chrono::{DateTime, Utc};
use poem_openapi::Object;

use crate::lag::{LagStats, Lifecycle};
use crate::projector::views::{PatientRow, QueueRow};

/// Opens a queue.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct CreateQueueRequest {
    /// Queue id (1–64 of letters, digits, `.`, `_`, `-`); a UUID v7 is generated when omitted.
    pub queue_id: Option<String>,
    /// Display name, 1–200 characters after trimming.
    pub name: String,
    /// Active patients (waiting + called) allowed at once, 1–10000.
    pub max_capacity: i64,
    /// No-shows that end a visit, 1–10 (default 2).
    pub max_no_shows: Option<i64>,
}

/// A created queue.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct QueueCreated {
    pub queue_id: String,
    /// The stream version after the command.
    pub version: i32,
}

/// Checks a patient in.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct CheckInRequest {
    /// 1–64 characters, no `/`.
    pub patient_id: String,
    /// 1–200 characters after trimming.
    pub patient_name: String,
    /// `Low`, `Medium`, `High` or `Urgent` (any letter case).
    pub priority: String,
    /// 2–100 characters after trimming.
    pub consultation_type: String,
    /// Up to 1000 characters.
    pub notes: Option<String>,
}

/// A checked-in patient.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct CheckedIn {
    pub event_id: String,
    pub version: i32,
    /// 1-based place in call order at check-in.
    pub position: u32,
}

/// Calls the next patient.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct CallNextRequest {
    /// The room the patient should go to, 1–100 characters.
    pub consulting_room: String,
}

/// The patient who was called.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct CalledPatient {
    pub event_id: String,
    pub version: i32,
    pub patient_id: String,
    pub patient_name: String,
    pub priority: String,
    pub consultation_type: String,
    pub consulting_room: String,
    pub called_at: DateTime<Utc>,
}

/// A command's result.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub event_id: String,
    pub version: i32,
}

/// A no-show's result: `WAITING` (back in the queue) or `NO_SHOW` (visit over).
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase")]
#[serde(rename_all = "camelCase")]
pub struct NoShowResult {
    pub event_id: String,
    pub version: i32,
    pub status: String,
    pub no_show_count: u32,
}

/// A queue as the read model shows it.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueueView {
    pub queue_id: String,
    pub name: String,
    pub max_capacity: i32,
    pub max_no_shows: i32,
    /// WAITING + CALLED.
    pub current_patient_count: i32,
    pub waiting_count: i32,
    pub called_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Stream version of the last event the read model applied.
    pub version: i32,
}

impl From<QueueRow> for QueueView {
    fn from(r: QueueRow) -> Self {
        Self {
            queue_id: r.queue_id,
            name: r.queue_name,
            max_capacity: r.max_capacity,
            max_no_shows: r.max_no_shows,
            current_patient_count: r.current_patient_count,
            waiting_count: r.waiting_count,
            called_count: r.called_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.updated_by_event_version,
        }
    }
}

/// An active patient.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct PatientView {
    pub patient_id: String,
    pub patient_name: String,
    pub priority: String,
    pub consultation_type: String,
    pub notes: Option<String>,
    /// `WAITING` or `CALLED`.
    pub status: String,
    /// 1-based place in call order among waiting patients; null once called.
    pub position: Option<i32>,
    pub checked_in_at: DateTime<Utc>,
    /// When the patient (re)joined the line (a no-show requeues at the back).
    pub queued_at: DateTime<Utc>,
    pub called_at: Option<DateTime<Utc>>,
    pub consulting_room: Option<String>,
    pub no_show_count: i32,
}

impl From<PatientRow> for PatientView {
    fn from(r: PatientRow) -> Self {
        Self {
            patient_id: r.patient_id,
            patient_name: r.patient_name,
            priority: r.priority,
            consultation_type: r.consultation_type,
            notes: r.notes,
            status: r.status,
            position: r.position_in_queue,
            checked_in_at: r.checked_in_at,
            queued_at: r.queued_at,
            called_at: r.called_at,
            consulting_room: r.consulting_room,
            no_show_count: r.no_show_count,
        }
    }
}

/// A queue with its active patients: called ones first, then waiting ones in call order.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct QueueDetail {
    #[oai(flatten)]
    pub queue: QueueView,
    pub patients: Vec<PatientView>,
}

/// One stored event.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: String,
    pub stream_id: String,
    pub version: i32,
    pub global_position: i64,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: String,
    /// The event payload (camelCase).
    pub data: serde_json::Value,
}

/// A page of a queue's audit trail.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct EventPage {
    pub queue_id: String,
    pub events: Vec<EventView>,
}

/// End-to-end lag statistics (created → projected, Postgres clock), in milliseconds.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct LagStatsView {
    pub count: i64,
    pub min_ms: Option<f64>,
    pub avg_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Processed events per second over the window.
    pub events_per_second: f64,
}

impl From<LagStats> for LagStatsView {
    fn from(s: LagStats) -> Self {
        Self {
            count: s.count,
            min_ms: s.min_ms,
            avg_ms: s.avg_ms,
            p50_ms: s.p50_ms,
            p95_ms: s.p95_ms,
            p99_ms: s.p99_ms,
            max_ms: s.max_ms,
            events_per_second: s.events_per_second,
        }
    }
}

/// Statistics of one event type.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct EventTypeLag {
    pub event_type: String,
    #[oai(flatten)]
    pub stats: LagStatsView,
}

/// Lag statistics over a window.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct LagReportView {
    pub window_seconds: f64,
    pub overall: LagStatsView,
    pub by_event: Vec<EventTypeLag>,
}

/// One event's lifecycle.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct EventLag {
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub version: i32,
    /// `CREATED`, `PUBLISHED`, `PROCESSED` or `FAILED`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
    pub processed_at: Option<DateTime<Utc>>,
    /// created → published.
    pub outbox_dispatch_ms: Option<f64>,
    /// published → projected.
    pub projection_processing_ms: Option<f64>,
    /// created → projected.
    pub total_lag_ms: Option<f64>,
    pub failure_reason: Option<String>,
}

impl From<Lifecycle> for EventLag {
    fn from(l: Lifecycle) -> Self {
        Self {
            event_id: l.event_id.to_string(),
            event_type: l.event_type,
            stream_id: l.stream_id,
            version: l.version,
            status: l.status,
            created_at: l.created_at,
            published_at: l.published_at,
            processed_at: l.processed_at,
            outbox_dispatch_ms: l.outbox_dispatch_ms,
            projection_processing_ms: l.projection_processing_ms,
            total_lag_ms: l.total_lag_ms,
            failure_reason: l.failure_reason,
        }
    }
}

/// The outbox backlog.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct OutboxPending {
    /// Unpublished rows the relay will still try.
    pub count: i64,
    /// Age of the oldest of them, null when none.
    pub oldest_age_ms: Option<f64>,
    /// Rows the relay gave up on (dead rows).
    pub failed: i64,
}

/// A parked stream.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct ParkedStreamView {
    pub stream_id: String,
    pub parked_version: Option<i32>,
    pub error: Option<String>,
    pub parked_at: Option<DateTime<Utc>>,
}

/// One projection's checkpoint health.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub name: String,
    /// Streams in the event store.
    pub streams: i64,
    /// Streams whose checkpoint is behind the store.
    pub streams_behind: i64,
    /// Events not yet applied.
    pub events_behind: i64,
    pub last_applied_at: Option<DateTime<Utc>>,
    pub parked_streams: i64,
    /// Up to 100 parked streams, oldest first.
    pub parked: Vec<ParkedStreamView>,
    pub rebuilding: bool,
}

/// Health of every projection; `status` is `healthy`, or `unhealthy` when a stream is parked.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct ProjectionsHealth {
    pub status: String,
    pub projections: Vec<ProjectionStatus>,
}

/// A started rebuild.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct RebuildAccepted {
    pub projection: String,
    pub status: String,
}

/// Liveness.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct Liveness {
    pub status: String,
}

/// One dependency's state.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct DependencyCheck {
    pub name: String,
    /// `up` or `down`.
    pub status: String,
    pub detail: String,
}

/// Readiness: `ready` when every dependency is up, else `not_ready`.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct Readiness {
    pub status: String,
    pub checks: Vec<DependencyCheck>,
}
