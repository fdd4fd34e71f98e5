//! Queue commands. Each request body converts into a domain [`Command`] with `TryFrom`
//! (validation names the failing field); [`CommandMeta`] carries who asked, the
//! Idempotency-Key and the `If-Match` precondition; [`run`] executes and maps the outcome.

use poem::web::Data;
use poem_openapi::param::{Header, Path};
use poem_openapi::payload::Json;
use poem_openapi::types::{ToJSON, Type};
use poem_openapi::{ApiResponse, OpenApi};

use crate::api::models::*;
use crate::api::problem::{Problem, ProblemJson, ProblemResponse, impl_problem};
use crate::api::types::{ETag, IdempotencyKeyText, IfMatchText, PatientIdText, QueueIdText};
use crate::api::{ApiTags, AppState, RequestContext};
use crate::domain::{
    Capacity, Command, ConsultationType, ConsultingRoom, Event, MaxNoShows, Notes, PatientId,
    PatientName, Priority, QueueId, QueueName, ValidationError,
};
use crate::store::{CommandContext, Decided, IdempotencyRequest, IfMatch};

/// `createQueue`'s answers.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CreateQueueResponse {
    /// The queue was created (or this is a retry of the request that created it).
    #[oai(status = 201)]
    Created(Json<QueueCreated>, #[oai(header = "ETag")] ETag),
    /// `validation-error` (with `errors[]`) or `invalid-request`.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-exists`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`: the key was used for a different request.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(CreateQueueResponse { 400 => BadRequest, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

/// `checkIn`'s answers.
#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CheckInResponse {
    /// The patient is in the queue.
    #[oai(status = 201)]
    Created(Json<CheckedIn>, #[oai(header = "ETag")] ETag),
    /// `validation-error` (with `errors[]`) or `invalid-request`.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `already-checked-in` or `queue-full`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `precondition-failed`: the queue is not at a version `If-Match` names.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(CheckInResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 412 => PreconditionFailed, 422 => Unprocessable, 503 => Unavailable });

/// The answers of the commands on an existing queue (call next, complete, no-show, cancel).
#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CommandResponse<T: ToJSON + Send + Sync + Type> {
    /// Done; the body says what was decided.
    #[oai(status = 200)]
    Ok(Json<T>, #[oai(header = "ETag")] ETag),
    /// `validation-error` (with `errors[]`) or `invalid-request`.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`, or `patient-not-found` (no active visit).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `queue-empty` (call next) or `invalid-patient-state`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `precondition-failed`: the queue is not at a version `If-Match` names.
    #[oai(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}

impl<T: ToJSON + Send + Sync + Type> ProblemResponse for CommandResponse<T> {
    fn from_problem(problem: Problem) -> Self {
        match problem.status {
            400 => Self::BadRequest(Json(problem)),
            404 => Self::NotFound(Json(problem)),
            409 => Self::Conflict(Json(problem)),
            412 => Self::PreconditionFailed(Json(problem)),
            422 => Self::Unprocessable(Json(problem)),
            _ => Self::Unavailable(Json(Problem {
                status: 503,
                ..problem
            })),
        }
    }
}

/// How the caller asked for a command: who (from the correlation middleware), its
/// Idempotency-Key and its `If-Match` precondition, validated.
struct CommandMeta {
    context: CommandContext,
}

impl CommandMeta {
    /// `operation` and `body` identify the request an Idempotency-Key stands for.
    fn new(
        ctx: &RequestContext,
        key: Option<&IdempotencyKeyText>,
        if_match: Option<&IfMatchText>,
        operation: String,
        body: Option<serde_json::Value>,
    ) -> Result<Self, ValidationError> {
        // An empty header is no header (clients that always send the field send it empty).
        // `str::is_empty` by name: poem-openapi's `Type` (in scope) has an `is_empty` too.
        let key = key.map(|k| k.trim()).filter(|k| !str::is_empty(k));
        let if_match = if_match
            .map(|h| h.trim_matches([' ', '\t']))
            .filter(|h| !str::is_empty(h));
        let idempotency = key
            .map(|key| {
                if !(1..=255).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ValidationError {
                        field: "Idempotency-Key",
                        message: "must be 1–255 printable ASCII characters without spaces".into(),
                    });
                }
                let request = serde_json::json!({ "operation": operation, "body": body });
                Ok(IdempotencyRequest {
                    key: key.to_owned(),
                    request,
                })
            })
            .transpose()?;
        let if_match = if_match.map(parse_if_match).transpose()?;
        Ok(Self {
            context: CommandContext {
                correlation_id: ctx.correlation_id.clone(),
                causation_id: idempotency
                    .as_ref()
                    .map(|i| i.key.clone())
                    .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                actor: ctx.actor.clone(),
                idempotency,
                if_match,
            },
        })
    }
}

/// `*` or a comma-separated list of strong entity tags `"<version>"` (what the ETag carries).
fn parse_if_match(raw: &str) -> Result<IfMatch, ValidationError> {
    let invalid = || ValidationError {
        field: "If-Match",
        message: "must be `*` or a list of entity tags such as \"3\" (the queue's ETag)".into(),
    };
    let raw = raw.trim_matches([' ', '\t']);
    if raw == "*" {
        return Ok(IfMatch::Exists);
    }
    raw.split(',')
        .map(|tag| {
            let digits = tag
                .trim_matches([' ', '\t'])
                .strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .filter(|d| (1..=10).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(invalid)?;
            digits.parse::<i64>().map_err(|_| invalid())
        })
        .collect::<Result<Vec<_>, _>>()
        .map(IfMatch::AnyOf)
}

/// A request converted into what the store executes.
struct Parsed {
    queue_id: QueueId,
    command: Command,
}

/// The request headers every command reads: its context, Idempotency-Key and If-Match.
type CommandHeaders<'a> = (
    &'a RequestContext,
    Option<&'a IdempotencyKeyText>,
    Option<&'a IfMatchText>,
);

/// A parsed command with its metadata; `operation` names, from the parsed command, the
/// request an Idempotency-Key stands for.
fn with_meta(
    parsed: Result<Parsed, ValidationError>,
    (ctx, key, if_match): CommandHeaders<'_>,
    operation: impl FnOnce(&Parsed) -> String,
    body: Option<serde_json::Value>,
) -> Result<(Parsed, CommandMeta), ValidationError> {
    let parsed = parsed?;
    let meta = CommandMeta::new(ctx, key, if_match, operation(&parsed), body)?;
    Ok((parsed, meta))
}

/// A command on one patient (complete, cancel, no-show), parsed with its metadata.
fn patient_parsed(
    headers: CommandHeaders<'_>,
    queue_id: &QueueIdText,
    patient_id: &PatientIdText,
    action: PatientAction,
) -> Result<(Parsed, CommandMeta), ValidationError> {
    let operation = match action {
        PatientAction::Complete => "complete",
        PatientAction::Cancel => "cancel",
        PatientAction::NoShow => "noShow",
    };
    with_meta(
        Parsed::try_from((queue_id, patient_id, action)),
        headers,
        |p| format!("{operation} {} {}", p.queue_id, patient_id.trim()),
        None,
    )
}

impl TryFrom<&CreateQueueRequest> for Parsed {
    type Error = ValidationError;

    fn try_from(body: &CreateQueueRequest) -> Result<Self, Self::Error> {
        let queue_id = match &body.queue_id {
            Some(id) => QueueId::parse(id)?,
            None => QueueId::generate(),
        };
        let command = Command::CreateQueue {
            queue_id: queue_id.clone(),
            name: QueueName::parse(&body.name)?,
            max_capacity: Capacity::parse(body.max_capacity.0)?,
            max_no_shows: body
                .max_no_shows
                .map(|n| MaxNoShows::parse(n.0))
                .transpose()?
                .unwrap_or_default(),
        };
        Ok(Self { queue_id, command })
    }
}

impl TryFrom<(&QueueIdText, &CheckInRequest)> for Parsed {
    type Error = ValidationError;

    fn try_from((queue_id, body): (&QueueIdText, &CheckInRequest)) -> Result<Self, Self::Error> {
        Ok(Self {
            queue_id: QueueId::parse(queue_id)?,
            command: Command::CheckIn {
                patient_id: PatientId::parse(&body.patient_id)?,
                patient_name: PatientName::parse(&body.patient_name)?,
                priority: Priority::parse(&body.priority.0)?,
                consultation_type: ConsultationType::parse(&body.consultation_type)?,
                notes: Notes::parse(body.notes.as_deref())?,
            },
        })
    }
}

impl TryFrom<(&QueueIdText, &CallNextRequest)> for Parsed {
    type Error = ValidationError;

    fn try_from((queue_id, body): (&QueueIdText, &CallNextRequest)) -> Result<Self, Self::Error> {
        Ok(Self {
            queue_id: QueueId::parse(queue_id)?,
            command: Command::CallNext {
                consulting_room: ConsultingRoom::parse(&body.consulting_room)?,
            },
        })
    }
}

/// The commands on one patient, addressed by path.
#[derive(Clone, Copy)]
enum PatientAction {
    Complete,
    NoShow,
    Cancel,
}

impl TryFrom<(&QueueIdText, &PatientIdText, PatientAction)> for Parsed {
    type Error = ValidationError;

    fn try_from(
        (queue_id, patient_id, action): (&QueueIdText, &PatientIdText, PatientAction),
    ) -> Result<Self, Self::Error> {
        let queue_id = QueueId::parse(queue_id)?;
        let patient_id = PatientId::parse(patient_id)?;
        let command = match action {
            PatientAction::Complete => Command::Complete { patient_id },
            PatientAction::NoShow => Command::MarkNoShow { patient_id },
            PatientAction::Cancel => Command::Cancel { patient_id },
        };
        Ok(Self { queue_id, command })
    }
}

/// The single event a command decided, with its id and version.
fn only_event<'a>(d: &'a Decided<'_>) -> (&'a Event, uuid::Uuid, i32) {
    let e = &d.events[0];
    (&e.event, e.event_id, e.version)
}

/// Converts, executes and answers: `respond` builds the body from the decision (stored with
/// the Idempotency-Key), `version` reads the stream version from it for the ETag.
async fn run<B, R>(
    state: &AppState,
    parsed: Result<(Parsed, CommandMeta), ValidationError>,
    respond: impl Fn(&Decided<'_>) -> B,
    version: impl Fn(&B) -> i32,
    ok: impl FnOnce(Json<B>, ETag) -> R,
) -> R
where
    B: serde::Serialize + serde::de::DeserializeOwned,
    R: ProblemResponse,
{
    let (parsed, meta) = match parsed {
        Ok(p) => p,
        Err(e) => return R::from_problem(e.into()),
    };
    let queue_id = parsed.queue_id.to_string();
    match state
        .store
        .execute(&queue_id, &parsed.command, &meta.context, respond)
        .await
    {
        Ok(done) => {
            let etag = ETag(i64::from(version(&done.response)));
            ok(Json(done.response), etag)
        }
        Err(e) => R::from_problem(Problem::store(&e, &queue_id)),
    }
}

/// Queue commands.
pub struct CommandsApi;

#[OpenApi]
impl CommandsApi {
    /// Create a queue.
    #[oai(
        path = "/api/queues",
        method = "post",
        operation_id = "createQueue",
        tag = "ApiTags::Queues"
    )]
    async fn create_queue(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        body: Json<CreateQueueRequest>,
    ) -> CreateQueueResponse {
        let parsed = with_meta(
            Parsed::try_from(&body.0),
            (&ctx, idempotency_key.0.as_ref(), None),
            |_| "createQueue".into(),
            body.0.to_json(),
        );
        run(
            &state,
            parsed,
            |d| QueueCreated {
                queue_id: d
                    .state
                    .settings
                    .as_ref()
                    .map(|s| s.queue_id.clone())
                    .unwrap_or_default(),
                version: only_event(d).2,
            },
            |r| r.version,
            CreateQueueResponse::Created,
        )
        .await
    }

    /// Check a patient in.
    #[oai(
        path = "/api/queues/:queueId/check-ins",
        method = "post",
        operation_id = "checkIn",
        tag = "ApiTags::Queues"
    )]
    async fn check_in(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        #[oai(name = "If-Match")] if_match: Header<Option<IfMatchText>>,
        body: Json<CheckInRequest>,
    ) -> CheckInResponse {
        let parsed = with_meta(
            Parsed::try_from((&queue_id.0, &body.0)),
            (&ctx, idempotency_key.0.as_ref(), if_match.0.as_ref()),
            |p| format!("checkIn {}", p.queue_id),
            body.0.to_json(),
        );
        let patient_id = body.patient_id.trim().to_owned();
        run(
            &state,
            parsed,
            |d| {
                let (_, event_id, version) = only_event(d);
                CheckedIn {
                    event_id,
                    version,
                    position: d.state.waiting_position(&patient_id).unwrap_or(0),
                }
            },
            |r| r.version,
            CheckInResponse::Created,
        )
        .await
    }

    /// Call the next patient: highest priority, then earliest queue time.
    #[oai(
        path = "/api/queues/:queueId/call-next",
        method = "post",
        operation_id = "callNext",
        tag = "ApiTags::Queues"
    )]
    async fn call_next(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        #[oai(name = "If-Match")] if_match: Header<Option<IfMatchText>>,
        body: Json<CallNextRequest>,
    ) -> CommandResponse<CalledPatient> {
        let parsed = with_meta(
            Parsed::try_from((&queue_id.0, &body.0)),
            (&ctx, idempotency_key.0.as_ref(), if_match.0.as_ref()),
            |p| format!("callNext {}", p.queue_id),
            body.0.to_json(),
        );
        run(
            &state,
            parsed,
            |d| {
                let (event, event_id, version) = only_event(d);
                let Event::PatientCalled(c) = event else {
                    unreachable!("CallNext decides PatientCalled")
                };
                CalledPatient {
                    event_id,
                    version,
                    patient_id: c.patient_id.clone(),
                    patient_name: c.patient_name.clone(),
                    priority: c.priority.into(),
                    consultation_type: c.consultation_type.clone(),
                    consulting_room: c.consulting_room.clone(),
                    called_at: c.called_at,
                }
            },
            |r| r.version,
            CommandResponse::Ok,
        )
        .await
    }

    /// Complete a called patient's consultation.
    #[oai(
        path = "/api/queues/:queueId/patients/:patientId/complete",
        method = "post",
        operation_id = "completeConsultation",
        tag = "ApiTags::Queues"
    )]
    async fn complete(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        #[oai(name = "patientId")] patient_id: Path<PatientIdText>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        #[oai(name = "If-Match")] if_match: Header<Option<IfMatchText>>,
    ) -> CommandResponse<CommandResult> {
        let meta = (ctx.0, idempotency_key.0.as_ref(), if_match.0.as_ref());
        patient_command(
            &state,
            meta,
            &queue_id,
            &patient_id,
            PatientAction::Complete,
        )
        .await
    }

    /// Cancel a waiting or called patient's check-in.
    #[oai(
        path = "/api/queues/:queueId/patients/:patientId/cancel",
        method = "post",
        operation_id = "cancelCheckIn",
        tag = "ApiTags::Queues"
    )]
    async fn cancel(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        #[oai(name = "patientId")] patient_id: Path<PatientIdText>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        #[oai(name = "If-Match")] if_match: Header<Option<IfMatchText>>,
    ) -> CommandResponse<CommandResult> {
        let meta = (ctx.0, idempotency_key.0.as_ref(), if_match.0.as_ref());
        patient_command(&state, meta, &queue_id, &patient_id, PatientAction::Cancel).await
    }

    /// Mark a called patient as a no-show: back to the end of the queue, or out after `maxNoShows`.
    #[oai(
        path = "/api/queues/:queueId/patients/:patientId/no-show",
        method = "post",
        operation_id = "markNoShow",
        tag = "ApiTags::Queues"
    )]
    async fn no_show(
        &self,
        state: Data<&AppState>,
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        #[oai(name = "patientId")] patient_id: Path<PatientIdText>,
        #[oai(name = "Idempotency-Key")] idempotency_key: Header<Option<IdempotencyKeyText>>,
        #[oai(name = "If-Match")] if_match: Header<Option<IfMatchText>>,
    ) -> CommandResponse<NoShowResult> {
        let parsed = patient_parsed(
            (&ctx, idempotency_key.0.as_ref(), if_match.0.as_ref()),
            &queue_id,
            &patient_id,
            PatientAction::NoShow,
        );
        run(
            &state,
            parsed,
            |d| {
                let (event, event_id, version) = only_event(d);
                let Event::PatientMarkedNoShow(n) = event else {
                    unreachable!("MarkNoShow decides PatientMarkedNoShow")
                };
                NoShowResult {
                    event_id,
                    version,
                    status: n.status.into(),
                    no_show_count: n.no_show_count,
                }
            },
            |r| r.version,
            CommandResponse::Ok,
        )
        .await
    }
}

/// Complete and cancel: the same shape, a [`CommandResult`].
async fn patient_command(
    state: &AppState,
    headers: CommandHeaders<'_>,
    queue_id: &QueueIdText,
    patient_id: &PatientIdText,
    action: PatientAction,
) -> CommandResponse<CommandResult> {
    let parsed = patient_parsed(headers, queue_id, patient_id, action);
    run(
        state,
        parsed,
        |d| {
            let (_, event_id, version) = only_event(d);
            CommandResult { event_id, version }
        },
        |r| r.version,
        CommandResponse::Ok,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::Text;

    fn ctx() -> RequestContext {
        RequestContext {
            correlation_id: "c".into(),
            actor: "a".into(),
        }
    }

    #[test]
    fn empty_idempotency_key_and_if_match_are_no_headers() {
        let key = Text::new("");
        let tag = Text::new(" ");
        let meta = CommandMeta::new(&ctx(), Some(&key), Some(&tag), "op".into(), None)
            .expect("empty headers are absent");
        assert!(meta.context.idempotency.is_none());
        assert!(meta.context.if_match.is_none());
    }

    #[test]
    fn if_match_lists_versions_or_any() {
        assert_eq!(parse_if_match("*"), Ok(IfMatch::Exists));
        assert_eq!(
            parse_if_match("\"3\", \"4\""),
            Ok(IfMatch::AnyOf(vec![3, 4]))
        );
        for bad in ["3", "W/\"3\"", "\"3\",", "\"\""] {
            assert!(parse_if_match(bad).is_err(), "{bad}");
        }
    }
}
