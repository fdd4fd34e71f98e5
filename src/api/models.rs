//! Request and response bodies of the API (camelCase JSON).

use chrono::{DateTime, TimeZone, Utc};
use poem_openapi::Object;
use poem_openapi::types::{Example, ParseFromJSON};

use super::types::*;
use crate::lag::{LagStats, Lifecycle};
use crate::projector::views::{PatientRow, QueueRow};

/// A stored name as one of the API's enums; `fallback` (and an error log) for a name the API
/// does not know, which only a manual edit of the database can produce.
pub(crate) fn stored<T: ParseFromJSON + std::fmt::Debug>(name: &str, fallback: T) -> T {
    parse_enum(name).unwrap_or_else(|| {
        tracing::error!(name, ?fallback, "unknown stored enum value");
        fallback
    })
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_764_230_400 + secs, 0)
        .single()
        .unwrap_or_default()
}

const EXAMPLE_EVENT_ID: &str = "01936b2e-8f3a-7c4d-9e5f-0a1b2c3d4e5f";

/// Opens a queue.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct CreateQueueRequest {
    /// Queue id (1–64 of letters, digits, `.`, `_`, `-`); a UUID v7 is generated when omitted or null.
    #[oai(nullable)]
    pub queue_id: Option<QueueIdText>,
    pub name: QueueNameText,
    /// Active patients (waiting + called) allowed at once, 1–10000.
    pub max_capacity: Int<1, 10_000>,
    /// No-shows that end a visit, 1–10 (default 2 when omitted or null).
    #[oai(nullable)]
    pub max_no_shows: Option<Int<1, 10>>,
}

impl Example for CreateQueueRequest {
    fn example() -> Self {
        Self {
            queue_id: Some(Text::new("cardiology")),
            name: Text::new("Cardiology"),
            max_capacity: Int(20),
            max_no_shows: Some(Int(2)),
        }
    }
}

/// A created queue.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct QueueCreated {
    pub queue_id: String,
    /// The stream version after the command (also the `ETag`).
    pub version: i32,
}

impl Example for QueueCreated {
    fn example() -> Self {
        Self {
            queue_id: "cardiology".into(),
            version: 1,
        }
    }
}

/// Checks a patient in. `priority` is one of the `Priority` names (any letter case is accepted).
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct CheckInRequest {
    pub patient_id: PatientIdText,
    pub patient_name: PatientNameText,
    pub priority: PriorityInput,
    pub consultation_type: ConsultationTypeText,
    #[oai(nullable)]
    pub notes: Option<NotesText>,
}

impl Example for CheckInRequest {
    fn example() -> Self {
        Self {
            patient_id: Text::new("p-1042"),
            patient_name: Text::new("Ada Lovelace"),
            priority: PriorityInput("Urgent".into()),
            consultation_type: Text::new("General"),
            notes: Some(Text::new("Chest pain since this morning")),
        }
    }
}

/// A checked-in patient.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct CheckedIn {
    pub event_id: uuid::Uuid,
    /// The stream version after the command (also the `ETag`).
    pub version: i32,
    /// 1-based place in call order at check-in.
    pub position: u32,
}

impl Example for CheckedIn {
    fn example() -> Self {
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            version: 2,
            position: 1,
        }
    }
}

/// Calls the next patient.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct CallNextRequest {
    pub consulting_room: ConsultingRoomText,
}

impl Example for CallNextRequest {
    fn example() -> Self {
        Self {
            consulting_room: Text::new("Room 3"),
        }
    }
}

/// The patient who was called.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct CalledPatient {
    pub event_id: uuid::Uuid,
    /// The stream version after the command (also the `ETag`).
    pub version: i32,
    pub patient_id: String,
    pub patient_name: String,
    pub priority: Priority,
    pub consultation_type: String,
    pub consulting_room: String,
    pub called_at: DateTime<Utc>,
}

impl Example for CalledPatient {
    fn example() -> Self {
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            version: 4,
            patient_id: "p-1042".into(),
            patient_name: "Ada Lovelace".into(),
            priority: Priority::Urgent,
            consultation_type: "General".into(),
            consulting_room: "Room 3".into(),
            called_at: at(600),
        }
    }
}

/// A command's result.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub event_id: uuid::Uuid,
    /// The stream version after the command (also the `ETag`).
    pub version: i32,
}

impl Example for CommandResult {
    fn example() -> Self {
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            version: 5,
        }
    }
}

/// A no-show's result: `status` is `WAITING` (back in the queue) or `NO_SHOW` (visit over).
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "camelCase", example)]
#[serde(rename_all = "camelCase")]
pub struct NoShowResult {
    pub event_id: uuid::Uuid,
    /// The stream version after the command (also the `ETag`).
    pub version: i32,
    pub status: PatientStatus,
    pub no_show_count: u32,
}

impl Example for NoShowResult {
    fn example() -> Self {
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            version: 5,
            status: PatientStatus::Waiting,
            no_show_count: 1,
        }
    }
}

/// A queue as the read model shows it.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
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
    /// Stream version of the last event the read model applied (the `ETag` of `getQueue`).
    pub version: i32,
}

impl Example for QueueView {
    fn example() -> Self {
        Self {
            queue_id: "cardiology".into(),
            name: "Cardiology".into(),
            max_capacity: 20,
            max_no_shows: 2,
            current_patient_count: 2,
            waiting_count: 1,
            called_count: 1,
            created_at: at(0),
            updated_at: at(600),
            version: 4,
        }
    }
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

/// An active patient (`status` is `WAITING` or `CALLED`).
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct PatientView {
    pub patient_id: String,
    pub patient_name: String,
    pub priority: Priority,
    pub consultation_type: String,
    #[oai(nullable)]
    pub notes: Option<String>,
    pub status: PatientStatus,
    /// 1-based place in call order among waiting patients; null once called.
    #[oai(nullable)]
    pub position: Option<i32>,
    pub checked_in_at: DateTime<Utc>,
    /// When the patient (re)joined the line (a no-show requeues at the back).
    pub queued_at: DateTime<Utc>,
    #[oai(nullable)]
    pub called_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub consulting_room: Option<String>,
    pub no_show_count: i32,
}

impl Example for PatientView {
    fn example() -> Self {
        Self {
            patient_id: "p-1043".into(),
            patient_name: "Alan Turing".into(),
            priority: Priority::Low,
            consultation_type: "General".into(),
            notes: None,
            status: PatientStatus::Waiting,
            position: Some(1),
            checked_in_at: at(300),
            queued_at: at(300),
            called_at: None,
            consulting_room: None,
            no_show_count: 0,
        }
    }
}

impl From<PatientRow> for PatientView {
    fn from(r: PatientRow) -> Self {
        let priority = crate::domain::Priority::parse(&r.priority)
            .map(Priority::from)
            .unwrap_or_else(|_| stored(&r.priority, Priority::Medium));
        Self {
            patient_id: r.patient_id,
            patient_name: r.patient_name,
            priority,
            consultation_type: r.consultation_type,
            notes: r.notes,
            status: stored(&r.status, PatientStatus::Waiting),
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
#[oai(rename_all = "camelCase", example)]
pub struct QueueDetail {
    #[oai(flatten)]
    pub queue: QueueView,
    pub patients: Vec<PatientView>,
}

impl Example for QueueDetail {
    fn example() -> Self {
        let called = PatientView {
            patient_id: "p-1042".into(),
            patient_name: "Ada Lovelace".into(),
            priority: Priority::Urgent,
            notes: Some("Chest pain since this morning".into()),
            status: PatientStatus::Called,
            position: None,
            checked_in_at: at(200),
            queued_at: at(200),
            called_at: Some(at(600)),
            consulting_room: Some("Room 3".into()),
            ..PatientView::example()
        };
        Self {
            queue: QueueView::example(),
            patients: vec![called, PatientView::example()],
        }
    }
}

/// One stored event.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct EventView {
    pub event_id: uuid::Uuid,
    pub stream_id: String,
    pub version: i32,
    pub global_position: i64,
    pub event_type: EventType,
    pub occurred_at: DateTime<Utc>,
    pub correlation_id: String,
    #[oai(nullable)]
    pub causation_id: Option<String>,
    pub actor: String,
    /// The event payload (camelCase), with `queueId` and, for patient events, `patientId`.
    pub data: std::collections::BTreeMap<String, serde_json::Value>,
}

impl Example for EventView {
    fn example() -> Self {
        let data = serde_json::json!({
            "queueId": "cardiology", "queueName": "Cardiology", "maxCapacity": 20, "maxNoShows": 2,
            "createdAt": "2025-11-27T08:00:00Z"
        });
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            stream_id: "cardiology".into(),
            version: 1,
            global_position: 1,
            event_type: EventType::WaitingQueueCreated,
            occurred_at: at(0),
            correlation_id: "0b9e7c1e-5d3f-4a51-8a0e-6f1f2d3c4b5a".into(),
            causation_id: Some("01936b2e-8f3a-7c4d-9e5f-0a1b2c3d4e60".into()),
            actor: "reception".into(),
            data: serde_json::from_value(data).unwrap_or_default(),
        }
    }
}

/// A page of a queue's audit trail.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct EventPage {
    pub queue_id: String,
    pub events: Vec<EventView>,
}

impl Example for EventPage {
    fn example() -> Self {
        Self {
            queue_id: "cardiology".into(),
            events: vec![EventView::example()],
        }
    }
}

/// End-to-end lag statistics (created → projected, Postgres clock), in milliseconds; the
/// figures are null when no event was processed in the window.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct LagStatsView {
    pub count: i64,
    #[oai(nullable)]
    pub min_ms: Option<f64>,
    #[oai(nullable)]
    pub avg_ms: Option<f64>,
    #[oai(nullable)]
    pub p50_ms: Option<f64>,
    #[oai(nullable)]
    pub p95_ms: Option<f64>,
    #[oai(nullable)]
    pub p99_ms: Option<f64>,
    #[oai(nullable)]
    pub max_ms: Option<f64>,
    /// Processed events per second over the window.
    pub events_per_second: f64,
}

impl Example for LagStatsView {
    fn example() -> Self {
        Self {
            count: 120,
            min_ms: Some(1.8),
            avg_ms: Some(4.2),
            p50_ms: Some(3.9),
            p95_ms: Some(7.5),
            p99_ms: Some(11.0),
            max_ms: Some(14.3),
            events_per_second: 0.4,
        }
    }
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
    pub event_type: EventType,
    #[oai(flatten)]
    pub stats: LagStatsView,
}

/// Lag statistics over a window.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct LagReportView {
    pub window_seconds: f64,
    pub overall: LagStatsView,
    pub by_event: Vec<EventTypeLag>,
}

impl Example for LagReportView {
    fn example() -> Self {
        Self {
            window_seconds: 300.0,
            overall: LagStatsView::example(),
            by_event: vec![EventTypeLag {
                event_type: EventType::PatientCheckedIn,
                stats: LagStatsView::example(),
            }],
        }
    }
}

/// One event's lifecycle; stage durations and timestamps are null until the stage happened.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct EventLag {
    pub event_id: uuid::Uuid,
    pub event_type: EventType,
    pub stream_id: String,
    pub version: i32,
    pub status: LagStatus,
    pub created_at: DateTime<Utc>,
    #[oai(nullable)]
    pub published_at: Option<DateTime<Utc>>,
    #[oai(nullable)]
    pub processed_at: Option<DateTime<Utc>>,
    /// created → published.
    #[oai(nullable)]
    pub outbox_dispatch_ms: Option<f64>,
    /// published → projected.
    #[oai(nullable)]
    pub projection_processing_ms: Option<f64>,
    /// created → projected.
    #[oai(nullable)]
    pub total_lag_ms: Option<f64>,
    #[oai(nullable)]
    pub failure_reason: Option<String>,
}

impl Example for EventLag {
    fn example() -> Self {
        Self {
            event_id: EXAMPLE_EVENT_ID.parse().unwrap_or_default(),
            event_type: EventType::PatientCheckedIn,
            stream_id: "cardiology".into(),
            version: 2,
            status: LagStatus::Processed,
            created_at: at(200),
            published_at: Some(at(200)),
            processed_at: Some(at(200)),
            outbox_dispatch_ms: Some(1.6),
            projection_processing_ms: Some(2.1),
            total_lag_ms: Some(3.7),
            failure_reason: None,
        }
    }
}

impl From<Lifecycle> for EventLag {
    fn from(l: Lifecycle) -> Self {
        Self {
            event_id: l.event_id,
            event_type: stored(&l.event_type, EventType::WaitingQueueCreated),
            stream_id: l.stream_id,
            version: l.version,
            status: stored(&l.status, LagStatus::Failed),
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
#[oai(rename_all = "camelCase", example)]
pub struct OutboxPending {
    /// Unpublished rows the relay will still try.
    pub count: i64,
    /// Age of the oldest of them, null when none.
    #[oai(nullable)]
    pub oldest_age_ms: Option<f64>,
    /// Rows the relay gave up on (dead rows).
    pub failed: i64,
}

impl Example for OutboxPending {
    fn example() -> Self {
        Self {
            count: 0,
            oldest_age_ms: None,
            failed: 0,
        }
    }
}

/// A parked stream.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct ParkedStreamView {
    pub stream_id: String,
    #[oai(nullable)]
    pub parked_version: Option<i32>,
    #[oai(nullable)]
    pub error: Option<String>,
    #[oai(nullable)]
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
    #[oai(nullable)]
    pub last_applied_at: Option<DateTime<Utc>>,
    /// Parked streams, all of them counted.
    pub parked_streams: i64,
    /// Up to 100 parked streams, oldest first.
    pub parked: Vec<ParkedStreamView>,
    pub rebuilding: bool,
}

/// Health of every projection: `healthy`, `unhealthy` when a stream is parked, or `unknown`
/// (with `detail`) when Postgres could not be asked.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct ProjectionsHealth {
    pub status: ProjectionsStatus,
    pub projections: Vec<ProjectionStatus>,
    /// Why the status is `unknown`; absent otherwise.
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl Example for ProjectionsHealth {
    fn example() -> Self {
        Self {
            status: ProjectionsStatus::Healthy,
            projections: vec![ProjectionStatus {
                name: "waiting_room".into(),
                streams: 3,
                streams_behind: 0,
                events_behind: 0,
                last_applied_at: Some(at(600)),
                parked_streams: 0,
                parked: Vec::new(),
                rebuilding: false,
            }],
            detail: None,
        }
    }
}

/// A started rebuild.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct RebuildAccepted {
    pub projection: String,
    pub status: RebuildStatus,
}

impl Example for RebuildAccepted {
    fn example() -> Self {
        Self {
            projection: "waiting_room".into(),
            status: RebuildStatus::Started,
        }
    }
}

/// Liveness.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct Liveness {
    pub status: LivenessStatus,
}

impl Example for Liveness {
    fn example() -> Self {
        Self {
            status: LivenessStatus::Ok,
        }
    }
}

/// One dependency's state.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct DependencyCheck {
    pub name: String,
    pub status: DependencyStatus,
    pub detail: String,
}

/// The oldest transaction holding a transaction id on the Postgres cluster: the relay's
/// commit-safe barrier. While it runs, an idle relay polls every 20 ms instead of sleeping
/// (it waits out every transaction in flight before it sleeps), and vacuum cannot clean up
/// behind it.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct OldestTransaction {
    /// Seconds since the transaction began.
    pub age_seconds: f64,
    /// Its backend's process id (`pg_terminate_backend(pid)` ends it); null for a prepared
    /// transaction, which no session holds.
    #[oai(nullable)]
    pub pid: Option<i32>,
    #[oai(nullable)]
    pub database: Option<String>,
    /// The session's `application_name`, or `prepared transaction <gid>`.
    #[oai(nullable)]
    pub application_name: Option<String>,
    /// `active`, `idle in transaction`, ... or `prepared`.
    #[oai(nullable)]
    pub state: Option<String>,
}

/// Readiness: `ready` when no dependency is down, else `not_ready`. The `transactions`
/// check is a `warning` (still 200) while a transaction has held a transaction id for 60 s
/// or more; `oldestTransaction` describes the oldest one, when there is one (and Postgres
/// lets this role see it: other roles' sessions need `pg_read_all_stats`).
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct Readiness {
    pub status: ReadinessStatus,
    pub checks: Vec<DependencyCheck>,
    // No doc comment here: it would make the spec wrap the reference in `allOf`.
    #[oai(skip_serializing_if_is_none)]
    pub oldest_transaction: Option<OldestTransaction>,
}

impl Example for Readiness {
    fn example() -> Self {
        let up = |name: &str, detail: &str| DependencyCheck {
            name: name.into(),
            status: DependencyStatus::Up,
            detail: detail.into(),
        };
        Self {
            status: ReadinessStatus::Ready,
            checks: vec![
                up("postgres", "connected"),
                up("rabbitmq", "connected"),
                up("relay", "leader in this process"),
                up(
                    "projector",
                    "1 consumer(s) on waiting-room-projection-queue",
                ),
                up(
                    "transactions",
                    "oldest transaction holding an xid: 0.2 s (pid 4242, database waitroom, application psql, active)",
                ),
            ],
            oldest_transaction: Some(OldestTransaction {
                age_seconds: 0.2,
                pid: Some(4242),
                database: Some("waitroom".into()),
                application_name: Some("psql".into()),
                state: Some("active".into()),
            }),
        }
    }
}
