//! Field types whose OpenAPI schema states exactly what the domain enforces, and the enums
//! of the API.
//!
//! Inputs are parsed leniently here (any string, any integer) and validated by the domain's
//! `parse` functions, so an invalid value is a `validation-error` problem naming the field
//! rather than a generic parse failure. Their schemas carry the same rules as patterns,
//! lengths and ranges, so a request valid by the spec is accepted and an invalid one is a 400.
//! The patterns are exact: surrounding whitespace is allowed (the domain trims, with Rust's
//! Unicode `White_Space`), control characters (Unicode `Cc`) are not.

use std::borrow::Cow;

use poem::http::HeaderValue;
use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{
    ParseError, ParseFromJSON, ParseFromParameter, ParseResult, ToHeader, ToJSON, Type,
};
use serde_json::Value;

/// What `str::trim` removes: Unicode `White_Space`, spelled out so every regex engine agrees.
macro_rules! ws {
    () => {
        r"\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}
/// Unicode `Cc` (what `char::is_control` rejects).
macro_rules! cc {
    () => {
        r"\u0000-\u001f\u007f-\u009f"
    };
}

/// 1–`max` characters after trimming, none of them a control character.
macro_rules! trimmed_text_pattern {
    ($inner:literal) => {
        concat!(
            "^[",
            ws!(),
            "]*[^",
            cc!(),
            ws!(),
            "](?:[^",
            cc!(),
            "]{0,",
            $inner,
            "}[^",
            cc!(),
            ws!(),
            "])?[",
            ws!(),
            "]*$"
        )
    };
}

/// The rules of one constrained text field.
pub trait TextRule: Send + Sync + 'static {
    /// The schema's `pattern` (ECMA 262, also valid for Python's `re`), if any.
    const PATTERN: Option<&'static str>;
    /// The schema's `format`, if any.
    const FORMAT: Option<&'static str> = None;
    /// The schema's description.
    const DESCRIPTION: &'static str;
    /// An example value.
    const EXAMPLE: &'static str;
}

/// A string the domain validates; its schema is `R`'s rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<R>(pub String, std::marker::PhantomData<R>);

impl<R> Text<R> {
    /// Wraps a raw value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into(), std::marker::PhantomData)
    }

    /// The raw value, as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<R> std::ops::Deref for Text<R> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<R: TextRule> Type for Text<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some(R::DESCRIPTION),
            pattern: R::PATTERN.map(str::to_owned),
            format: R::FORMAT,
            example: Some(Value::String(R::EXAMPLE.to_owned())),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<R: TextRule> ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self::new(s)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<R: TextRule> ParseFromParameter for Text<R> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        Ok(Self::new(value))
    }
}

impl<R: TextRule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

macro_rules! text_rule {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $description:literal, $example:literal $(, $format:literal)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name;
        impl TextRule for $name {
            const PATTERN: Option<&'static str> = $pattern;
            $(const FORMAT: Option<&'static str> = Some($format);)?
            const DESCRIPTION: &'static str = $description;
            const EXAMPLE: &'static str = $example;
        }
    };
}

// No minLength/maxLength: surrounding whitespace is trimmed, so only the pattern states the
// rule exactly.
text_rule!(
    /// `queueId`: 1–64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit.
    QueueIdRule,
    Some(concat!("^[", ws!(), "]*[A-Za-z0-9][A-Za-z0-9._-]{0,63}[", ws!(), "]*$")),
    "Queue id: 1–64 of letters, digits, `.`, `_`, `-`, starting with a letter or digit (surrounding whitespace is trimmed).",
    "cardiology"
);
text_rule!(
    /// `patientId`: 1–64 characters after trimming, no `/`, no control characters, not `.`/`..`.
    PatientIdRule,
    Some(concat!(
        "^(?![", ws!(), "]*\\.\\.?[", ws!(), "]*$)[", ws!(), "]*[^/", cc!(), ws!(), "](?:[^/", cc!(),
        "]{0,62}[^/", cc!(), ws!(), "])?[", ws!(), "]*$"
    )),
    "Patient id: 1–64 characters after trimming, without `/` or control characters, not `.` or `..`.",
    "p-1042"
);
text_rule!(
    /// `name` of a queue: 1–200 characters after trimming.
    QueueNameRule,
    Some(trimmed_text_pattern!("198")),
    "Display name: 1–200 characters after trimming, no control characters.",
    "Cardiology"
);
text_rule!(
    /// `patientName`: 1–200 characters after trimming.
    PatientNameRule,
    Some(trimmed_text_pattern!("198")),
    "Patient name: 1–200 characters after trimming, no control characters.",
    "Ada Lovelace"
);
text_rule!(
    /// `consultationType`: 2–100 characters after trimming.
    ConsultationTypeRule,
    Some(concat!(
        "^[", ws!(), "]*[^", cc!(), ws!(), "][^", cc!(), "]{0,98}[^", cc!(), ws!(), "][", ws!(), "]*$"
    )),
    "Kind of consultation: 2–100 characters after trimming, no control characters.",
    "General"
);
text_rule!(
    /// `consultingRoom`: 1–100 characters after trimming.
    ConsultingRoomRule,
    Some(trimmed_text_pattern!("98")),
    "Consulting room the patient goes to: 1–100 characters after trimming, no control characters.",
    "Room 3"
);
text_rule!(
    /// `notes`: up to 1000 characters after trimming; line breaks and tabs allowed inside.
    NotesRule,
    Some(concat!(
        "^[", ws!(), "]*(?:[^", cc!(), ws!(), r"](?:[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]{0,998}[^",
        cc!(), ws!(), "])?)?[", ws!(), "]*$"
    )),
    "Free-text notes: up to 1000 characters after trimming; no control characters except line breaks and tabs inside. Blank means none.",
    "Follow-up after surgery"
);
text_rule!(
    /// `Idempotency-Key`: 1–255 visible ASCII characters.
    IdempotencyKeyRule,
    Some(r"^[ \t]*(?:[!-~]{1,255})?[ \t]*$"),
    "Retrying with the same key returns the first response and appends nothing (1–255 visible ASCII characters, no spaces; an empty value is no key). Reusing a key for a different request is a 422.",
    "3f1c9a0e-check-in-p-1042"
);
text_rule!(
    /// `If-Match`: `*` or a list of strong entity tags `"<version>"`.
    IfMatchRule,
    Some(r#"^[ \t]*(?:\*|"[0-9]{1,10}"(?:[ \t]*,[ \t]*"[0-9]{1,10}")*)?[ \t]*$"#),
    "Run the command only if the queue is at one of these versions (its `ETag`, e.g. `\"3\"`), or exists at all (`*`); otherwise 412 `precondition-failed` and nothing is appended. An empty value is no condition.",
    "\"3\""
);
text_rule!(
    /// `eventId`: a UUID in its hyphenated form.
    EventIdRule,
    None,
    "Event id: a UUID in its hyphenated form.",
    "01936b2e-8f3a-7c4d-9e5f-0a1b2c3d4e5f",
    "uuid"
);

pub type QueueIdText = Text<QueueIdRule>;
pub type PatientIdText = Text<PatientIdRule>;
pub type QueueNameText = Text<QueueNameRule>;
pub type PatientNameText = Text<PatientNameRule>;
pub type ConsultationTypeText = Text<ConsultationTypeRule>;
pub type ConsultingRoomText = Text<ConsultingRoomRule>;
pub type NotesText = Text<NotesRule>;
pub type IdempotencyKeyText = Text<IdempotencyKeyRule>;
pub type IfMatchText = Text<IfMatchRule>;
pub type EventIdText = Text<EventIdRule>;

/// An integer the domain range-checks; its schema states the range `MIN..=MAX`.
/// Integral JSON numbers written with a fraction (`5.0`) are integers, as JSON Schema says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Int<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> Type for Int<MIN, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "integer_int64".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            minimum: Some(MIN as f64),
            maximum: Some(MAX as f64),
            ..MetaSchema::new_with_format("integer", "int64")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

fn integral(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        let f = n.as_f64()?;
        // Beyond ±2^53 a float is no longer exact; such values are out of every range here.
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    })
}

impl<const MIN: i64, const MAX: i64> ParseFromJSON for Int<MIN, MAX> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::Number(n) => integral(&n)
                .map(Self)
                .ok_or_else(|| ParseError::custom(format!("{n} is not an integer in {MIN}–{MAX}"))),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<const MIN: i64, const MAX: i64> ParseFromParameter for Int<MIN, MAX> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map(Self).map_err(ParseError::custom)
    }
}

impl<const MIN: i64, const MAX: i64> ToJSON for Int<MIN, MAX> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0))
    }
}

impl<const MIN: i64, const MAX: i64> Int<MIN, MAX> {
    /// Whether the value is in `MIN..=MAX`.
    pub fn in_range(self) -> bool {
        (MIN..=MAX).contains(&self.0)
    }
}

/// A number the handler range-checks; its schema states `1..=2592000` (the lag window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSeconds(pub f64);

impl WindowSeconds {
    pub const MIN: f64 = 1.0;
    pub const MAX: f64 = 2_592_000.0;
}

impl Type for WindowSeconds {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "number_double".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            minimum: Some(Self::MIN),
            maximum: Some(Self::MAX),
            ..MetaSchema::new_with_format("number", "double")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromParameter for WindowSeconds {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        value.parse().map(Self).map_err(ParseError::custom)
    }
}

/// A priority as sent: the schema is the [`Priority`] enum; any letter case is accepted (the
/// domain parses it), and an unknown name is a `validation-error` naming `priority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityInput(pub String);

impl Type for PriorityInput {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        <Priority as Type>::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        <Priority as Type>::schema_ref()
    }

    fn register(registry: &mut Registry) {
        <Priority as Type>::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for PriorityInput {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self(s)),
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for PriorityInput {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// A strong entity tag `"<version>"`: a queue's stream version, for `If-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ETag(pub i64);

impl Type for ETag {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "string".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: Some(r#"^"[0-9]+"$"#.to_owned()),
            example: Some(Value::String("\"3\"".to_owned())),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self> {
        Some(self)
    }

    fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ToHeader for ETag {
    fn to_header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&format!("\"{}\"", self.0)).ok()
    }
}

/// Triage priority; higher is called first (`Low` < `Medium` < `High` < `Urgent`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, serde::Serialize, serde::Deserialize,
)]
pub enum Priority {
    Low,
    Medium,
    High,
    Urgent,
}

impl From<crate::domain::Priority> for Priority {
    fn from(p: crate::domain::Priority) -> Self {
        use crate::domain::Priority as P;
        match p {
            P::Low => Self::Low,
            P::Medium => Self::Medium,
            P::High => Self::High,
            P::Urgent => Self::Urgent,
        }
    }
}

/// Where a patient's visit stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, serde::Serialize, serde::Deserialize,
)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatientStatus {
    Waiting,
    Called,
    Completed,
    Cancelled,
    NoShow,
}

impl From<crate::domain::PatientStatus> for PatientStatus {
    fn from(s: crate::domain::PatientStatus) -> Self {
        use crate::domain::PatientStatus as S;
        match s {
            S::Waiting => Self::Waiting,
            S::Called => Self::Called,
            S::Completed => Self::Completed,
            S::Cancelled => Self::Cancelled,
            S::NoShow => Self::NoShow,
        }
    }
}

/// Where an event is in the pipeline: created (in the outbox), published to RabbitMQ,
/// processed by the projector, or failed (dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LagStatus {
    Created,
    Published,
    Processed,
    Failed,
}

/// The type of a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
pub enum EventType {
    WaitingQueueCreated,
    PatientCheckedIn,
    PatientCalled,
    PatientConsultationCompleted,
    PatientMarkedNoShow,
    PatientCheckInCancelled,
}

/// Readiness: `ready` when no dependency is down (a `warning` check does not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

/// One dependency's state: `up`, `down`, or `warning` (working, but an operator should
/// look; readiness stays 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum DependencyStatus {
    Up,
    Down,
    Warning,
}

/// Projections: `healthy`, `unhealthy` (a stream is parked) or `unknown` (Postgres is unavailable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ProjectionsStatus {
    Healthy,
    Unhealthy,
    Unknown,
}

/// A liveness answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum LivenessStatus {
    Ok,
}

/// A rebuild request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum RebuildStatus {
    Started,
}

/// Parses a stored name into one of the API's enums (`None` for a name it does not know).
pub fn parse_enum<T: ParseFromJSON>(name: &str) -> Option<T> {
    T::parse_from_json(Some(Value::String(name.to_owned()))).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_keep_the_contract_wire_values() {
        assert_eq!(
            PatientStatus::NoShow.to_json(),
            Some(Value::from("NO_SHOW"))
        );
        assert_eq!(Priority::Urgent.to_json(), Some(Value::from("Urgent")));
        assert_eq!(
            ReadinessStatus::NotReady.to_json(),
            Some(Value::from("not_ready"))
        );
        assert_eq!(
            LagStatus::Processed.to_json(),
            Some(Value::from("PROCESSED"))
        );
        assert_eq!(
            parse_enum::<EventType>("PatientCheckInCancelled"),
            Some(EventType::PatientCheckInCancelled)
        );
        for s in [
            crate::domain::PatientStatus::Waiting,
            crate::domain::PatientStatus::NoShow,
        ] {
            assert_eq!(
                PatientStatus::from(s).to_json(),
                Some(Value::from(s.as_str()))
            );
        }
    }
}
