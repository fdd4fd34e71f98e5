//! The waiting-queue aggregate: `decide` turns a command into events or a
//! rejection, `apply` folds an event into the state. Both are pure.
//!
//! The state holds only the queue's settings and its *active* patients, so its
//! size is bounded by the capacity, never by the stream's length; the store
//! keeps it as a snapshot row updated in the append transaction.

use std::cmp::Reverse;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::{
    Event, PatientCalled, PatientCheckInCancelled, PatientCheckedIn, PatientConsultationCompleted,
    PatientMarkedNoShow, WaitingQueueCreated,
};
use super::values::{
    Capacity, ConsultationType, ConsultingRoom, MaxNoShows, Notes, PatientId, PatientName,
    PatientStatus, Priority, QueueId, QueueName,
};

/// What a caller asks a queue to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Open a new queue.
    CreateQueue {
        queue_id: QueueId,
        name: QueueName,
        max_capacity: Capacity,
        max_no_shows: MaxNoShows,
    },
    /// Start a patient's visit.
    CheckIn {
        patient_id: PatientId,
        patient_name: PatientName,
        priority: Priority,
        consultation_type: ConsultationType,
        notes: Option<Notes>,
    },
    /// Call the next waiting patient in call order.
    CallNext { consulting_room: ConsultingRoom },
    /// Finish a called patient's consultation.
    Complete { patient_id: PatientId },
    /// Record that a called patient did not show up.
    MarkNoShow { patient_id: PatientId },
    /// Cancel a waiting or called patient's check-in.
    Cancel { patient_id: PatientId },
}

/// A business rule said no. Each variant maps to one HTTP status and problem type.
/// Serialisable so a rejected command's Idempotency-Key can replay the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "rejection", rename_all = "camelCase")]
pub enum Rejection {
    #[error("queue {queue_id} already exists")]
    QueueAlreadyExists { queue_id: String },
    #[error("queue not found")]
    QueueNotFound,
    #[error("patient {patient_id} is already {status} in this queue")]
    AlreadyCheckedIn {
        patient_id: String,
        status: PatientStatus,
    },
    #[error("queue is full: {active} of {capacity} places are taken")]
    QueueFull { active: u32, capacity: u32 },
    #[error("no patient is waiting")]
    QueueEmpty,
    #[error("patient {patient_id} has no active visit in this queue")]
    PatientNotFound { patient_id: String },
    #[error("patient {patient_id} is {status}, but must be {expected}")]
    InvalidPatientState {
        patient_id: String,
        status: PatientStatus,
        expected: String,
    },
}

impl Rejection {
    /// The stable slug used as the last segment of the problem `type`.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::QueueAlreadyExists { .. } => "queue-exists",
            Self::QueueNotFound => "queue-not-found",
            Self::AlreadyCheckedIn { .. } => "already-checked-in",
            Self::QueueFull { .. } => "queue-full",
            Self::QueueEmpty => "queue-empty",
            Self::PatientNotFound { .. } => "patient-not-found",
            Self::InvalidPatientState { .. } => "invalid-patient-state",
        }
    }

    /// Whether the rejection means "no such resource" (404) rather than a conflict (409).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::QueueNotFound | Self::PatientNotFound { .. })
    }
}

/// The queue's settings, fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueSettings {
    pub queue_id: String,
    pub name: String,
    pub max_capacity: u32,
    pub max_no_shows: u32,
}

/// A patient with an active visit (`WAITING` or `CALLED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivePatient {
    pub patient_id: String,
    pub patient_name: String,
    pub priority: Priority,
    pub consultation_type: String,
    pub status: PatientStatus,
    /// When the patient (re)joined the waiting line.
    pub queued_at: DateTime<Utc>,
    /// Stream version of the event that (re)queued the patient: the tie-break after `queued_at`.
    pub queue_seq: i64,
    pub no_show_count: u32,
    pub consulting_room: Option<String>,
}

impl ActivePatient {
    /// Sort key for call order: highest priority, then earliest queue time, then stream order.
    fn call_key(&self) -> (Reverse<Priority>, DateTime<Utc>, i64) {
        (Reverse(self.priority), self.queued_at, self.queue_seq)
    }
}

/// A queue's state as of `version` (0 = the queue does not exist yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueState {
    pub version: i64,
    pub settings: Option<QueueSettings>,
    pub patients: Vec<ActivePatient>,
}

impl QueueState {
    /// Folds a whole stream, oldest event first.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }

    /// The active patient with this id, if any.
    pub fn patient(&self, patient_id: &str) -> Option<&ActivePatient> {
        self.patients.iter().find(|p| p.patient_id == patient_id)
    }

    /// Waiting patients in the order `CallNext` would pick them.
    pub fn call_order(&self) -> Vec<&ActivePatient> {
        let mut waiting: Vec<&ActivePatient> = self
            .patients
            .iter()
            .filter(|p| p.status == PatientStatus::Waiting)
            .collect();
        waiting.sort_by_key(|p| p.call_key());
        waiting
    }

    /// 1-based place of a waiting patient in call order.
    pub fn waiting_position(&self, patient_id: &str) -> Option<u32> {
        self.call_order()
            .iter()
            .position(|p| p.patient_id == patient_id)
            .and_then(|i| u32::try_from(i + 1).ok())
    }

    /// Decides what `command` means for this state at time `now`.
    pub fn decide(&self, command: &Command, now: DateTime<Utc>) -> Result<Vec<Event>, Rejection> {
        let settings = match (command, &self.settings) {
            (
                Command::CreateQueue {
                    queue_id,
                    name,
                    max_capacity,
                    max_no_shows,
                },
                None,
            ) => {
                return Ok(vec![Event::QueueCreated(WaitingQueueCreated {
                    queue_id: queue_id.to_string(),
                    name: name.to_string(),
                    max_capacity: max_capacity.get(),
                    max_no_shows: max_no_shows.get(),
                    created_at: now,
                })]);
            }
            (Command::CreateQueue { queue_id, .. }, Some(_)) => {
                return Err(Rejection::QueueAlreadyExists {
                    queue_id: queue_id.to_string(),
                });
            }
            (_, None) => return Err(Rejection::QueueNotFound),
            (_, Some(settings)) => settings,
        };
        let queue_id = settings.queue_id.clone();
        let event = match command {
            Command::CreateQueue { .. } => unreachable!("handled above"),
            Command::CheckIn {
                patient_id,
                patient_name,
                priority,
                consultation_type,
                notes,
            } => {
                if let Some(existing) = self.patient(patient_id.as_str()) {
                    return Err(Rejection::AlreadyCheckedIn {
                        patient_id: patient_id.to_string(),
                        status: existing.status,
                    });
                }
                let active = u32::try_from(self.patients.len()).unwrap_or(u32::MAX);
                if active >= settings.max_capacity {
                    return Err(Rejection::QueueFull {
                        active,
                        capacity: settings.max_capacity,
                    });
                }
                Event::PatientCheckedIn(PatientCheckedIn {
                    queue_id,
                    patient_id: patient_id.to_string(),
                    patient_name: patient_name.to_string(),
                    priority: *priority,
                    consultation_type: consultation_type.to_string(),
                    notes: notes.as_ref().map(ToString::to_string),
                    checked_in_at: now,
                })
            }
            Command::CallNext { consulting_room } => {
                let next = self
                    .call_order()
                    .into_iter()
                    .next()
                    .ok_or(Rejection::QueueEmpty)?;
                Event::PatientCalled(PatientCalled {
                    queue_id,
                    patient_id: next.patient_id.clone(),
                    patient_name: next.patient_name.clone(),
                    priority: next.priority,
                    consultation_type: next.consultation_type.clone(),
                    consulting_room: consulting_room.to_string(),
                    called_at: now,
                })
            }
            Command::Complete { patient_id } => {
                self.require(patient_id, &[PatientStatus::Called], "CALLED")?;
                Event::ConsultationCompleted(PatientConsultationCompleted {
                    queue_id,
                    patient_id: patient_id.to_string(),
                    completed_at: now,
                })
            }
            Command::MarkNoShow { patient_id } => {
                let patient = self.require(patient_id, &[PatientStatus::Called], "CALLED")?;
                let no_show_count = patient.no_show_count + 1;
                let status = if no_show_count >= settings.max_no_shows {
                    PatientStatus::NoShow
                } else {
                    PatientStatus::Waiting
                };
                Event::PatientMarkedNoShow(PatientMarkedNoShow {
                    queue_id,
                    patient_id: patient_id.to_string(),
                    no_show_count,
                    status,
                    marked_at: now,
                })
            }
            Command::Cancel { patient_id } => {
                let patient = self.require(
                    patient_id,
                    &[PatientStatus::Waiting, PatientStatus::Called],
                    "WAITING or CALLED",
                )?;
                Event::CheckInCancelled(PatientCheckInCancelled {
                    queue_id,
                    patient_id: patient_id.to_string(),
                    previous_status: patient.status,
                    cancelled_at: now,
                })
            }
        };
        Ok(vec![event])
    }

    fn require(
        &self,
        patient_id: &PatientId,
        allowed: &[PatientStatus],
        expected: &'static str,
    ) -> Result<&ActivePatient, Rejection> {
        let patient =
            self.patient(patient_id.as_str())
                .ok_or_else(|| Rejection::PatientNotFound {
                    patient_id: patient_id.to_string(),
                })?;
        if !allowed.contains(&patient.status) {
            return Err(Rejection::InvalidPatientState {
                patient_id: patient_id.to_string(),
                status: patient.status,
                expected: expected.to_owned(),
            });
        }
        Ok(patient)
    }

    /// Folds one event into the state and advances `version`.
    pub fn apply(&mut self, event: &Event) {
        self.version += 1;
        let version = self.version;
        match event {
            Event::QueueCreated(e) => {
                self.settings = Some(QueueSettings {
                    queue_id: e.queue_id.clone(),
                    name: e.name.clone(),
                    max_capacity: e.max_capacity,
                    max_no_shows: e.max_no_shows,
                });
            }
            Event::PatientCheckedIn(e) => {
                self.remove(&e.patient_id);
                self.patients.push(ActivePatient {
                    patient_id: e.patient_id.clone(),
                    patient_name: e.patient_name.clone(),
                    priority: e.priority,
                    consultation_type: e.consultation_type.clone(),
                    status: PatientStatus::Waiting,
                    queued_at: e.checked_in_at,
                    queue_seq: version,
                    no_show_count: 0,
                    consulting_room: None,
                });
            }
            Event::PatientCalled(e) => {
                if let Some(p) = self.patient_mut(&e.patient_id) {
                    p.status = PatientStatus::Called;
                    p.consulting_room = Some(e.consulting_room.clone());
                }
            }
            Event::PatientMarkedNoShow(e) if e.status == PatientStatus::Waiting => {
                if let Some(p) = self.patient_mut(&e.patient_id) {
                    p.status = PatientStatus::Waiting;
                    p.no_show_count = e.no_show_count;
                    p.queued_at = e.marked_at;
                    p.queue_seq = version;
                    p.consulting_room = None;
                }
            }
            Event::PatientMarkedNoShow(e) => self.remove(&e.patient_id),
            Event::ConsultationCompleted(e) => self.remove(&e.patient_id),
            Event::CheckInCancelled(e) => self.remove(&e.patient_id),
        }
    }

    fn patient_mut(&mut self, patient_id: &str) -> Option<&mut ActivePatient> {
        self.patients
            .iter_mut()
            .find(|p| p.patient_id == patient_id)
    }

    fn remove(&mut self, patient_id: &str) {
        self.patients.retain(|p| p.patient_id != patient_id);
    }
}
