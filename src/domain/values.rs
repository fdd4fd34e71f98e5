//! Validated value types. Every input from the edge passes through one of these
//! `parse` functions, so the aggregate never sees an invalid name, id or number.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rejected input value: which field and why, in words a caller can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The camelCase field name as it appears in the API.
    pub field: &'static str,
    /// What is wrong with the value.
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Trims `raw` and checks its length in characters (not bytes) and that it has no control characters.
fn text(field: &'static str, raw: &str, min: usize, max: usize) -> Result<String, ValidationError> {
    let value = raw.trim();
    let len = value.chars().count();
    if len < min || len > max {
        return Err(ValidationError::new(
            field,
            format!("must be {min}–{max} characters after trimming, got {len}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The validated value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A queue's id, which is also its event stream id: 1–64 of `A-Z a-z 0-9 . _ -`,
    /// starting with a letter or digit, so it is safe in URLs, routing keys and logs.
    QueueId
);
string_newtype!(
    /// A patient's id within a clinic: 1–64 characters, no `/`, no control characters, not `.` or `..`.
    PatientId
);
string_newtype!(
    /// A queue's display name: 1–200 characters after trimming.
    QueueName
);
string_newtype!(
    /// A patient's name: 1–200 characters after trimming.
    PatientName
);
string_newtype!(
    /// The kind of consultation (e.g. "General"): 2–100 characters after trimming.
    ConsultationType
);
string_newtype!(
    /// The room a called patient goes to: 1–100 characters after trimming.
    ConsultingRoom
);
string_newtype!(
    /// Free-text notes on a check-in: up to 1000 characters, no control characters but
    /// line breaks and tabs; blank means none.
    Notes
);

impl QueueId {
    /// Parses a caller-supplied queue id.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        let len = value.chars().count();
        if !(1..=64).contains(&len) {
            return Err(ValidationError::new(
                "queueId",
                format!("must be 1–64 characters, got {len}"),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if !value.chars().all(allowed) || !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(ValidationError::new(
                "queueId",
                "may contain only letters, digits, '.', '_' and '-', and must start with a letter or digit",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    /// A fresh, time-ordered id (UUID v7) for queues created without one.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl PatientId {
    /// Parses a caller-supplied patient id.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = text("patientId", raw, 1, 64)?;
        if value.contains('/') {
            return Err(ValidationError::new("patientId", "must not contain '/'"));
        }
        // URL clients collapse these path segments, so such a patient could not be addressed.
        if value == "." || value == ".." {
            return Err(ValidationError::new("patientId", "must not be '.' or '..'"));
        }
        Ok(Self(value))
    }
}

impl QueueName {
    /// Parses a queue name.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        text("name", raw, 1, 200).map(Self)
    }
}

impl PatientName {
    /// Parses a patient name.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        text("patientName", raw, 1, 200).map(Self)
    }
}

impl ConsultationType {
    /// Parses a consultation type.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        text("consultationType", raw, 2, 100).map(Self)
    }
}

impl ConsultingRoom {
    /// Parses a consulting room.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        text("consultingRoom", raw, 1, 100).map(Self)
    }
}

impl Notes {
    /// Parses optional notes; `None`, empty or blank input means no notes.
    pub fn parse(raw: Option<&str>) -> Result<Option<Self>, ValidationError> {
        match raw.map(str::trim) {
            None | Some("") => Ok(None),
            Some(value) => {
                let len = value.chars().count();
                if len > 1000 {
                    return Err(ValidationError::new(
                        "notes",
                        format!("must be at most 1000 characters, got {len}"),
                    ));
                }
                // Line breaks and tabs belong in free text; a NUL cannot be stored in Postgres.
                let forbidden = |c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t');
                if value.chars().any(forbidden) {
                    return Err(ValidationError::new(
                        "notes",
                        "must not contain control characters other than line breaks and tabs",
                    ));
                }
                Ok(Some(Self(value.to_owned())))
            }
        }
    }
}

/// How many patients may be active (waiting or called) at once: 1–10000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Capacity(u32);

impl Capacity {
    /// Parses a capacity.
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        match u32::try_from(raw) {
            Ok(value @ 1..=10_000) => Ok(Self(value)),
            _ => Err(ValidationError::new(
                "maxCapacity",
                format!("must be between 1 and 10000, got {raw}"),
            )),
        }
    }

    /// The capacity as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How many no-shows end a visit: 1–10, default 2. The no-show that reaches it
/// marks the patient `NO_SHOW`; earlier ones send the patient to the back of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaxNoShows(u32);

impl MaxNoShows {
    /// The default when a queue is created without one.
    pub const DEFAULT: MaxNoShows = MaxNoShows(2);

    /// Parses a no-show limit.
    pub fn parse(raw: i64) -> Result<Self, ValidationError> {
        match u32::try_from(raw) {
            Ok(value @ 1..=10) => Ok(Self(value)),
            _ => Err(ValidationError::new(
                "maxNoShows",
                format!("must be between 1 and 10, got {raw}"),
            )),
        }
    }

    /// The limit as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for MaxNoShows {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Triage priority; higher is called first. Input is case-insensitive, storage capitalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// Called last.
    Low,
    /// The usual priority.
    Medium,
    /// Called before Low and Medium.
    High,
    /// Called before everyone else.
    Urgent,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [Self::Low, Self::Medium, Self::High, Self::Urgent];

    /// Parses a priority name in any letter case.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let value = raw.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(value))
            .ok_or_else(|| {
                ValidationError::new(
                    "priority",
                    format!("must be one of Low, Medium, High, Urgent, got {value:?}"),
                )
            })
    }

    /// The capitalised name stored in events and read models.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "Low",
            Self::Medium => "Medium",
            Self::High => "High",
            Self::Urgent => "Urgent",
        }
    }

    /// Numeric rank (Low = 1 … Urgent = 4), as the read model stores it for ordering.
    pub fn rank(self) -> i16 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Urgent => 4,
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a patient's visit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatientStatus {
    /// In the queue, not yet called.
    Waiting,
    /// Called to a consulting room.
    Called,
    /// Consultation done; the visit is over.
    Completed,
    /// Check-in cancelled; the visit is over.
    Cancelled,
    /// Did not show up too many times; the visit is over.
    NoShow,
}

impl PatientStatus {
    /// The stored name (`WAITING`, `CALLED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "WAITING",
            Self::Called => "CALLED",
            Self::Completed => "COMPLETED",
            Self::Cancelled => "CANCELLED",
            Self::NoShow => "NO_SHOW",
        }
    }

    /// Whether the patient still holds a place (counts against capacity).
    pub fn is_active(self) -> bool {
        matches!(self, Self::Waiting | Self::Called)
    }
}

impl fmt::Display for PatientStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
