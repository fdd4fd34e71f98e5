//! The facts a queue's stream records. Payloads are camelCase JSON carrying
//! `queueId` and, for patient events, `patientId`, so psql users can filter on them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::{PatientStatus, Priority};

/// Version of the payload shapes below, stored with every event.
pub const SCHEMA_VERSION: i32 = 1;

/// A queue was opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingQueueCreated {
    pub queue_id: String,
    pub name: String,
    pub max_capacity: u32,
    pub max_no_shows: u32,
    pub created_at: DateTime<Utc>,
}

/// A patient joined the queue (a new visit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientCheckedIn {
    pub queue_id: String,
    pub patient_id: String,
    pub patient_name: String,
    pub priority: Priority,
    pub consultation_type: String,
    #[serde(default)]
    pub notes: Option<String>,
    pub checked_in_at: DateTime<Utc>,
}

/// The next patient in call order was called to a consulting room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientCalled {
    pub queue_id: String,
    pub patient_id: String,
    pub patient_name: String,
    pub priority: Priority,
    pub consultation_type: String,
    pub consulting_room: String,
    pub called_at: DateTime<Utc>,
}

/// A called patient's consultation finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientConsultationCompleted {
    pub queue_id: String,
    pub patient_id: String,
    pub completed_at: DateTime<Utc>,
}

/// A called patient did not show up. `status` is `WAITING` when the patient was
/// sent to the back of the queue (queue time = `markedAt`), `NO_SHOW` when the visit ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientMarkedNoShow {
    pub queue_id: String,
    pub patient_id: String,
    pub no_show_count: u32,
    pub status: PatientStatus,
    pub marked_at: DateTime<Utc>,
}

/// A waiting or called patient's check-in was cancelled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatientCheckInCancelled {
    pub queue_id: String,
    pub patient_id: String,
    pub previous_status: PatientStatus,
    pub cancelled_at: DateTime<Utc>,
}

/// Every event a queue stream can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    QueueCreated(WaitingQueueCreated),
    PatientCheckedIn(PatientCheckedIn),
    PatientCalled(PatientCalled),
    ConsultationCompleted(PatientConsultationCompleted),
    PatientMarkedNoShow(PatientMarkedNoShow),
    CheckInCancelled(PatientCheckInCancelled),
}

/// An event type name or payload that this version cannot read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("invalid {event_type} payload: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Every event type name, as stored in `event_type` and used in routing keys.
pub const EVENT_TYPES: [&str; 6] = [
    "WaitingQueueCreated",
    "PatientCheckedIn",
    "PatientCalled",
    "PatientConsultationCompleted",
    "PatientMarkedNoShow",
    "PatientCheckInCancelled",
];

impl Event {
    /// The stored type name (`PatientCheckedIn`, …).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::QueueCreated(_) => EVENT_TYPES[0],
            Self::PatientCheckedIn(_) => EVENT_TYPES[1],
            Self::PatientCalled(_) => EVENT_TYPES[2],
            Self::ConsultationCompleted(_) => EVENT_TYPES[3],
            Self::PatientMarkedNoShow(_) => EVENT_TYPES[4],
            Self::CheckInCancelled(_) => EVENT_TYPES[5],
        }
    }

    /// The patient this event is about, if any.
    pub fn patient_id(&self) -> Option<&str> {
        match self {
            Self::QueueCreated(_) => None,
            Self::PatientCheckedIn(e) => Some(&e.patient_id),
            Self::PatientCalled(e) => Some(&e.patient_id),
            Self::ConsultationCompleted(e) => Some(&e.patient_id),
            Self::PatientMarkedNoShow(e) => Some(&e.patient_id),
            Self::CheckInCancelled(e) => Some(&e.patient_id),
        }
    }

    /// The camelCase JSON payload stored in `waiting_room_events.payload`.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            Self::QueueCreated(e) => serde_json::to_value(e),
            Self::PatientCheckedIn(e) => serde_json::to_value(e),
            Self::PatientCalled(e) => serde_json::to_value(e),
            Self::ConsultationCompleted(e) => serde_json::to_value(e),
            Self::PatientMarkedNoShow(e) => serde_json::to_value(e),
            Self::CheckInCancelled(e) => serde_json::to_value(e),
        };
        // Serialising these plain structs cannot fail: no maps with non-string keys, no custom impls.
        value.expect("event payloads always serialise")
    }

    /// Reads an event back from its stored type name and payload.
    pub fn decode(event_type: &str, payload: serde_json::Value) -> Result<Self, DecodeError> {
        fn parse<T: serde::de::DeserializeOwned>(
            event_type: &str,
            payload: serde_json::Value,
        ) -> Result<T, DecodeError> {
            serde_json::from_value(payload).map_err(|source| DecodeError::Payload {
                event_type: event_type.to_owned(),
                source,
            })
        }
        Ok(match event_type {
            "WaitingQueueCreated" => Self::QueueCreated(parse(event_type, payload)?),
            "PatientCheckedIn" => Self::PatientCheckedIn(parse(event_type, payload)?),
            "PatientCalled" => Self::PatientCalled(parse(event_type, payload)?),
            "PatientConsultationCompleted" => {
                Self::ConsultationCompleted(parse(event_type, payload)?)
            }
            "PatientMarkedNoShow" => Self::PatientMarkedNoShow(parse(event_type, payload)?),
            "PatientCheckInCancelled" => Self::CheckInCancelled(parse(event_type, payload)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}
