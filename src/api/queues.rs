//! `/api/queues`: commands (through the store) and queries (over the read models).

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::*;
use super::problem::{Problem, ProblemJson, ProblemResponse, impl_problem};
use super::{ApiTags, AppState, RequestContext};
use crate::domain::{
    Capacity, Command, ConsultationType, ConsultingRoom, Event, MaxNoShows, Notes, PatientId,
    PatientName, Priority, QueueId, QueueName, ValidationError,
};
use crate::store::{CommandContext, Decided, IdempotencyRequest};

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CreateQueueResponse {
    /// The queue was created (or this is a retry of the request that created it).
    #[oai(status = 201)]
    Created(Json<QueueCreated>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-exists`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`: the key was used for a different request.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(CreateQueueResponse { 400 => BadRequest, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CheckInResponse {
    /// The patient is in the queue.
    #[oai(status = 201)]
    Created(Json<CheckedIn>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `already-checked-in` or `queue-full`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(CheckInResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum CallNextResponse {
    /// The called patient.
    #[oai(status = 200)]
    Ok(Json<CalledPatient>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `queue-empty`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(CallNextResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum PatientCommandResponse {
    /// Done.
    #[oai(status = 200)]
    Ok(Json<CommandResult>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found` or `patient-not-found` (no active visit).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `invalid-patient-state`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(PatientCommandResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum NoShowResponse {
    /// Recorded; `status` says whether the patient is back in the queue or gone.
    #[oai(status = 200)]
    Ok(Json<NoShowResult>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found` or `patient-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `invalid-patient-state`: the patient was not called.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// `idempotency-key-reused`.
    #[oai(status = 422, content_type = "application/problem+json")]
    Unprocessable(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(NoShowResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 422 => Unprocessable, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum ListQueuesResponse {
    /// Every queue.
    #[oai(status = 200)]
    Ok(Json<Vec<QueueView>>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(ListQueuesResponse { 400 => BadRequest, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum GetQueueResponse {
    /// The queue and its active patients.
    #[oai(status = 200)]
    Ok(Json<QueueDetail>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found` (or not projected yet: the read model trails the store by milliseconds).
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(GetQueueResponse { 400 => BadRequest, 404 => NotFound, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum EventsResponse {
    /// The queue's events, oldest first.
    #[oai(status = 200)]
    Ok(Json<EventPage>),
    /// Invalid request (`limit` 1–1000, `afterVersion` ≥ 0).
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(EventsResponse { 400 => BadRequest, 404 => NotFound, 503 => Unavailable });

/// Queue commands and queries.
pub struct QueuesApi {
    pub state: AppState,
}

fn idempotency(
    key: Option<String>,
    method_path: &str,
    body: Option<serde_json::Value>,
) -> Result<Option<IdempotencyRequest>, ValidationError> {
    let Some(key) = key else { return Ok(None) };
    let key = key.trim().to_owned();
    if !(1..=255).contains(&key.len()) || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError {
            field: "Idempotency-Key",
            message: "must be 1–255 printable ASCII characters without spaces".into(),
        });
    }
    let request = serde_json::json!({ "operation": method_path, "body": body });
    Ok(Some(IdempotencyRequest { key, request }))
}

fn command_context(
    ctx: &RequestContext,
    idempotency: Option<IdempotencyRequest>,
) -> CommandContext {
    CommandContext {
        correlation_id: ctx.correlation_id.clone(),
        causation_id: idempotency
            .as_ref()
            .map(|i| i.key.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        actor: ctx.actor.clone(),
        idempotency,
    }
}

fn only_event<'a>(d: &'a Decided<'_>) -> (&'a Event, String, i32) {
    let e = &d.events[0];
    (&e.event, e.event_id.to_string(), e.version)
}

impl QueuesApi {
    /// Runs a command on `queue_id` and builds the response from what was decided.
    async fn execute<T, R>(
        &self,
        queue_id: &str,
        command: Command,
        ctx: CommandContext,
        respond: impl Fn(&Decided<'_>) -> T,
        ok: impl FnOnce(T) -> R,
    ) -> R
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
        R: ProblemResponse,
    {
        match self
            .state
            .store
            .execute(queue_id, &command, &ctx, respond)
            .await
        {
            Ok(done) => ok(done.response),
            Err(e) => R::from_problem(Problem::store(&e, queue_id)),
        }
    }
}

fn parse_patient_command(
    queue_id: &str,
    patient_id: &str,
    make: impl FnOnce(PatientId) -> Command,
) -> Result<(QueueId, Command), ValidationError> {
    let queue_id = QueueId::parse(queue_id)?;
    let patient_id = PatientId::parse(patient_id)?;
    Ok((queue_id, make(patient_id)))
}

#[OpenApi]
impl QueuesApi {
    /// Create a queue.
    #[oai(
        path = "/api/queues",
        method = "post",
        operation_id = "createQueue",
        tag = "ApiTags::Queues"
    )]
    async fn create_queue(
        &self,
        ctx: Data<&RequestContext>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CreateQueueRequest>,
    ) -> CreateQueueResponse {
        let parsed = (|| -> Result<_, ValidationError> {
            let queue_id = match &body.queue_id {
                Some(id) => QueueId::parse(id)?,
                None => QueueId::generate(),
            };
            let command = Command::CreateQueue {
                queue_id: queue_id.clone(),
                name: QueueName::parse(&body.name)?,
                max_capacity: Capacity::parse(body.max_capacity)?,
                max_no_shows: body
                    .max_no_shows
                    .map(MaxNoShows::parse)
                    .transpose()?
                    .unwrap_or_default(),
            };
            let idem = idempotency(idempotency_key.0.clone(), "createQueue", body.0.to_json())?;
            Ok((queue_id, command, idem))
        })();
        let (queue_id, command, idem) = match parsed {
            Ok(p) => p,
            Err(e) => return CreateQueueResponse::from_problem(e.into()),
        };
        let qid = queue_id.to_string();
        self.execute(
            &qid,
            command,
            command_context(&ctx, idem),
            |d| QueueCreated {
                queue_id: d
                    .state
                    .settings
                    .as_ref()
                    .map(|s| s.queue_id.clone())
                    .unwrap_or_default(),
                version: only_event(d).2,
            },
            |r| CreateQueueResponse::Created(Json(r)),
        )
        .await
    }

    /// List queues (read model).
    #[oai(
        path = "/api/queues",
        method = "get",
        operation_id = "listQueues",
        tag = "ApiTags::Queues"
    )]
    async fn list_queues(&self) -> ListQueuesResponse {
        match crate::projector::views::list_queues(self.state.store.pool()).await {
            Ok(rows) => ListQueuesResponse::Ok(Json(rows.into_iter().map(Into::into).collect())),
            Err(e) => ListQueuesResponse::from_problem(e.into()),
        }
    }

    /// Get a queue with its active patients in call order (read model).
    #[oai(
        path = "/api/queues/:queueId",
        method = "get",
        operation_id = "getQueue",
        tag = "ApiTags::Queues"
    )]
    async fn get_queue(&self, #[oai(name = "queueId")] queue_id: Path<String>) -> GetQueueResponse {
        match crate::projector::views::queue_with_patients(self.state.store.pool(), &queue_id).await
        {
            Ok(Some((queue, patients))) => GetQueueResponse::Ok(Json(QueueDetail {
                queue: queue.into(),
                patients: patients.into_iter().map(Into::into).collect(),
            })),
            Ok(None) => GetQueueResponse::from_problem(Problem::not_found(
                "queue-not-found",
                format!("queue {} does not exist", queue_id.0),
            )),
            Err(e) => GetQueueResponse::from_problem(e.into()),
        }
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
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<String>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CheckInRequest>,
    ) -> CheckInResponse {
        let parsed = (|| -> Result<_, ValidationError> {
            let queue_id = QueueId::parse(&queue_id)?;
            let command = Command::CheckIn {
                patient_id: PatientId::parse(&body.patient_id)?,
                patient_name: PatientName::parse(&body.patient_name)?,
                priority: Priority::parse(&body.priority)?,
                consultation_type: ConsultationType::parse(&body.consultation_type)?,
                notes: Notes::parse(body.notes.as_deref())?,
            };
            let idem = idempotency(
                idempotency_key.0.clone(),
                &format!("checkIn {queue_id}"),
                body.0.to_json(),
            )?;
            Ok((queue_id, command, idem))
        })();
        let (queue_id, command, idem) = match parsed {
            Ok(p) => p,
            Err(e) => return CheckInResponse::from_problem(e.into()),
        };
        let patient_id = body.patient_id.trim().to_owned();
        self.execute(
            queue_id.as_str(),
            command,
            command_context(&ctx, idem),
            |d| {
                let (_, event_id, version) = only_event(d);
                CheckedIn {
                    event_id,
                    version,
                    position: d.state.waiting_position(&patient_id).unwrap_or(0),
                }
            },
            |r| CheckInResponse::Created(Json(r)),
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
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<String>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
        body: Json<CallNextRequest>,
    ) -> CallNextResponse {
        let parsed = (|| -> Result<_, ValidationError> {
            let queue_id = QueueId::parse(&queue_id)?;
            let command = Command::CallNext {
                consulting_room: ConsultingRoom::parse(&body.consulting_room)?,
            };
            let idem = idempotency(
                idempotency_key.0.clone(),
                &format!("callNext {queue_id}"),
                body.0.to_json(),
            )?;
            Ok((queue_id, command, idem))
        })();
        let (queue_id, command, idem) = match parsed {
            Ok(p) => p,
            Err(e) => return CallNextResponse::from_problem(e.into()),
        };
        self.execute(
            queue_id.as_str(),
            command,
            command_context(&ctx, idem),
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
                    priority: c.priority.to_string(),
                    consultation_type: c.consultation_type.clone(),
                    consulting_room: c.consulting_room.clone(),
                    called_at: c.called_at,
                }
            },
            |r| CallNextResponse::Ok(Json(r)),
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
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<String>,
        #[oai(name = "patientId")] patient_id: Path<String>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> PatientCommandResponse {
        self.patient_command(
            &ctx,
            &queue_id,
            &patient_id,
            idempotency_key.0,
            "complete",
            |patient_id| Command::Complete { patient_id },
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
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<String>,
        #[oai(name = "patientId")] patient_id: Path<String>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> PatientCommandResponse {
        self.patient_command(
            &ctx,
            &queue_id,
            &patient_id,
            idempotency_key.0,
            "cancel",
            |patient_id| Command::Cancel { patient_id },
        )
        .await
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
        ctx: Data<&RequestContext>,
        #[oai(name = "queueId")] queue_id: Path<String>,
        #[oai(name = "patientId")] patient_id: Path<String>,
        /// Retrying with the same key returns the first response and appends nothing.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> NoShowResponse {
        let parsed = parse_patient_command(&queue_id, &patient_id, |patient_id| {
            Command::MarkNoShow { patient_id }
        })
        .and_then(|(q, c)| {
            let idem = idempotency(
                idempotency_key.0.clone(),
                &format!("noShow {q} {}", patient_id.0.trim()),
                None,
            )?;
            Ok((q, c, idem))
        });
        let (queue_id, command, idem) = match parsed {
            Ok(p) => p,
            Err(e) => return NoShowResponse::from_problem(e.into()),
        };
        self.execute(
            queue_id.as_str(),
            command,
            command_context(&ctx, idem),
            |d| {
                let (event, event_id, version) = only_event(d);
                let Event::PatientMarkedNoShow(n) = event else {
                    unreachable!("MarkNoShow decides PatientMarkedNoShow")
                };
                NoShowResult {
                    event_id,
                    version,
                    status: n.status.to_string(),
                    no_show_count: n.no_show_count,
                }
            },
            |r| NoShowResponse::Ok(Json(r)),
        )
        .await
    }

    /// A queue's events (audit trail), oldest first.
    #[oai(
        path = "/api/queues/:queueId/events",
        method = "get",
        operation_id = "listQueueEvents",
        tag = "ApiTags::Queues"
    )]
    async fn events(
        &self,
        #[oai(name = "queueId")] queue_id: Path<String>,
        /// Only events with a greater version (default 0).
        #[oai(name = "afterVersion")]
        after_version: Query<Option<i64>>,
        /// At most this many events, 1–1000 (default 100).
        limit: Query<Option<i64>>,
    ) -> EventsResponse {
        let after = after_version.0.unwrap_or(0);
        let limit = limit.0.unwrap_or(100);
        if !(0..=i64::from(i32::MAX)).contains(&after) {
            return EventsResponse::from_problem(Problem::validation(&ValidationError {
                field: "afterVersion",
                message: format!("must be between 0 and {}, got {after}", i32::MAX),
            }));
        }
        if !(1..=1000).contains(&limit) {
            return EventsResponse::from_problem(Problem::validation(&ValidationError {
                field: "limit",
                message: format!("must be between 1 and 1000, got {limit}"),
            }));
        }
        let store = &self.state.store;
        match store.stream_version(&queue_id).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return EventsResponse::from_problem(Problem::not_found(
                    "queue-not-found",
                    format!("queue {} does not exist", queue_id.0),
                ));
            }
            Err(e) => return EventsResponse::from_problem(Problem::store(&e, &queue_id)),
        }
        let after = i32::try_from(after).unwrap_or(i32::MAX);
        match store.stream_events(&queue_id, after, limit).await {
            Ok(events) => EventsResponse::Ok(Json(EventPage {
                queue_id: queue_id.0.clone(),
                events: events
                    .into_iter()
                    .map(|e| EventView {
                        event_id: e.event_id.to_string(),
                        stream_id: e.stream_id,
                        version: e.version,
                        global_position: e.global_position,
                        event_type: e.event_type,
                        occurred_at: e.occurred_at,
                        correlation_id: e.correlation_id,
                        causation_id: e.causation_id,
                        actor: e.actor,
                        data: e.data,
                    })
                    .collect(),
            })),
            Err(e) => EventsResponse::from_problem(Problem::store(&e, &queue_id)),
        }
    }
}

impl QueuesApi {
    async fn patient_command(
        &self,
        ctx: &RequestContext,
        queue_id: &str,
        patient_id: &str,
        idempotency_key: Option<String>,
        operation: &str,
        make: impl FnOnce(PatientId) -> Command,
    ) -> PatientCommandResponse {
        let parsed = parse_patient_command(queue_id, patient_id, make).and_then(|(q, c)| {
            let idem = idempotency(
                idempotency_key,
                &format!("{operation} {q} {}", patient_id.trim()),
                None,
            )?;
            Ok((q, c, idem))
        });
        let (queue_id, command, idem) = match parsed {
            Ok(p) => p,
            Err(e) => return PatientCommandResponse::from_problem(e.into()),
        };
        self.execute(
            queue_id.as_str(),
            command,
            command_context(ctx, idem),
            |d| {
                let (_, event_id, version) = only_event(d);
                CommandResult { event_id, version }
            },
            |r| PatientCommandResponse::Ok(Json(r)),
        )
        .await
    }
}
