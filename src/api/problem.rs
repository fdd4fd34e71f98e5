//! RFC 9457 problem details. Every error the API returns is `application/problem+json`
//! with `{type, title, status, detail, correlationId}`; this module maps each failure to
//! exactly one status and problem type, in one place.

use poem_openapi::Object;
use poem_openapi::payload::Json;

use crate::domain::{Rejection, ValidationError};
use crate::projector::ProjectorError;
use crate::store::DbError;
use crate::store::StoreError;

/// Base URI of problem types; the last segment is the slug (`queue-full`, …).
pub const TYPE_BASE: &str = "https://waitroom.dev/problems/";

/// A field that failed validation.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase")]
pub struct FieldError {
    /// The request field (camelCase).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object)]
#[oai(rename_all = "camelCase", example)]
pub struct Problem {
    /// URI identifying the problem type; its last segment is a stable slug such as `queue-full`.
    #[oai(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened in this occurrence.
    pub detail: String,
    /// The request's correlation id (also in the `X-Correlation-Id` header).
    pub correlation_id: String,
    /// For validation errors: each invalid field.
    #[oai(skip_serializing_if_is_none)]
    pub errors: Option<Vec<FieldError>>,
}

impl poem_openapi::types::Example for Problem {
    fn example() -> Self {
        Self {
            problem_type: format!("{TYPE_BASE}queue-not-found"),
            title: "Queue not found".into(),
            status: 404,
            detail: "queue radiology does not exist".into(),
            correlation_id: "0b9e7c1e-5d3f-4a51-8a0e-6f1f2d3c4b5a".into(),
            errors: None,
        }
    }
}

impl Problem {
    /// A problem of type `slug` with `status`, `title` and `detail`. The correlation id is
    /// filled in by the correlation middleware, which knows it for every request.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            problem_type: format!("{TYPE_BASE}{slug}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            correlation_id: String::new(),
            errors: None,
        }
    }

    /// The problem as a complete response (for layers outside the typed operations).
    pub fn into_json_response(self) -> poem::Response {
        use poem::IntoResponse;
        let status = poem::http::StatusCode::from_u16(self.status)
            .unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Json(self).into_response();
        response.set_status(status);
        response.headers_mut().insert(
            poem::http::header::CONTENT_TYPE,
            poem::http::HeaderValue::from_static("application/problem+json"),
        );
        response
    }

    /// 400 for a request that could not be parsed (bad JSON, missing field, bad parameter).
    pub fn bad_request(err: &poem::Error) -> Self {
        Self::new(400, "invalid-request", "Invalid request", err.to_string())
    }

    /// 400 for a value that failed domain validation.
    pub fn validation(err: &ValidationError) -> Self {
        let mut p = Self::new(
            400,
            "validation-error",
            "Validation failed",
            err.to_string(),
        );
        p.errors = Some(vec![FieldError {
            field: err.field.to_owned(),
            message: err.message.clone(),
        }]);
        p
    }

    /// 404 for a missing resource.
    pub fn not_found(slug: &str, detail: impl Into<String>) -> Self {
        Self::new(404, slug, "Not found", detail)
    }

    /// 503 when a dependency failed; the detail names it without leaking internals.
    pub fn unavailable(what: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what} unavailable");
        Self::new(
            503,
            "service-unavailable",
            "Service unavailable",
            format!("{what} is unavailable; retry later"),
        )
    }

    /// The problem for a business-rule rejection.
    pub fn rejection(r: &Rejection, queue_id: &str) -> Self {
        let title = match r {
            Rejection::QueueAlreadyExists { .. } => "Queue already exists",
            Rejection::QueueNotFound => "Queue not found",
            Rejection::AlreadyCheckedIn { .. } => "Patient already checked in",
            Rejection::QueueFull { .. } => "Queue is full",
            Rejection::QueueEmpty => "Queue is empty",
            Rejection::PatientNotFound { .. } => "Patient not found",
            Rejection::InvalidPatientState { .. } => "Invalid patient state",
        };
        let detail = match r {
            Rejection::QueueNotFound => format!("queue {queue_id} does not exist"),
            other => format!("{other} (queue {queue_id})"),
        };
        let status = if r.is_not_found() { 404 } else { 409 };
        Self::new(status, r.slug(), title, detail)
    }

    /// The problem for a failed command.
    pub fn store(e: &StoreError, queue_id: &str) -> Self {
        match e {
            StoreError::Rejected(r) => Self::rejection(r, queue_id),
            StoreError::Invalid(v) => Self::validation(v),
            StoreError::IdempotencyKeyReused(key) => Self::new(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                format!("Idempotency-Key {key:?} was already used for a different request"),
            ),
            StoreError::PreconditionFailed { actual } => Self::new(
                412,
                "precondition-failed",
                "Precondition failed",
                if *actual == 0 {
                    format!("queue {queue_id} does not exist, so If-Match cannot match")
                } else {
                    format!(
                        "queue {queue_id} is at version {actual} (ETag \"{actual}\"), which If-Match does not name"
                    )
                },
            ),
            other => Self::unavailable("the event store", other),
        }
    }
}

impl From<DbError> for Problem {
    fn from(e: DbError) -> Self {
        Self::unavailable("the database", &e)
    }
}

impl From<ProjectorError> for Problem {
    fn from(e: ProjectorError) -> Self {
        match e {
            ProjectorError::UnknownProjection(name) => Self::not_found(
                "projection-not-found",
                format!("projection {name:?} does not exist"),
            ),
            ProjectorError::RebuildRunning(name) => Self::new(
                409,
                "rebuild-running",
                "Rebuild already running",
                format!("a rebuild of {name:?} is already running"),
            ),
            other => Self::unavailable("the database", &other),
        }
    }
}

impl From<ValidationError> for Problem {
    fn from(e: ValidationError) -> Self {
        Self::validation(&e)
    }
}

/// A response enum that can carry a problem: maps the problem's status to its variant.
pub trait ProblemResponse: Sized {
    /// Wraps `problem` in the variant for its status.
    fn from_problem(problem: Problem) -> Self;

    /// poem-openapi's hook for unparsable requests, so they are problem+json too.
    fn bad_request(err: poem::Error) -> Self {
        Self::from_problem(Problem::bad_request(&err))
    }
}

/// The payload type of every error variant.
pub type ProblemJson = Json<Problem>;

/// Implements [`ProblemResponse`] for a response enum: `impl_problem!(Resp { 400 => BadRequest, … })`.
/// A status the enum does not declare falls back to the 503 variant when present (an
/// undeclared status is a bug, and callers can retry a 503), else to the first listed.
macro_rules! impl_problem {
    ($ty:ident { $($status:literal => $variant:ident),+ $(,)? }) => {
        impl $crate::api::problem::ProblemResponse for $ty {
            fn from_problem(problem: $crate::api::problem::Problem) -> Self {
                #[allow(unreachable_patterns)]
                match problem.status {
                    $($status => $ty::$variant(poem_openapi::payload::Json(problem)),)+
                    _ => impl_problem!(@fallback $ty, problem, $($status => $variant),+),
                }
            }
        }
    };
    (@fallback $ty:ident, $p:ident, $first_status:literal => $first:ident $(, $status:literal => $variant:ident)*) => {{
        let mut p = $p;
        let variants: &[(u16, fn($crate::api::problem::Problem) -> $ty)] =
            &[($first_status, |p| $ty::$first(poem_openapi::payload::Json(p))),
              $(($status, |p| $ty::$variant(poem_openapi::payload::Json(p)))),*];
        let (status, make) = variants
            .iter()
            .find(|(s, _)| *s == 503)
            .or(variants.first())
            .copied()
            .expect("at least one variant");
        p.status = status;
        make(p)
    }};
}
pub(crate) use impl_problem;
