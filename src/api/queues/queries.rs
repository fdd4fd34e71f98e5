//! Queue queries: the read models (`listQueues`, `getQueue`) and the audit trail
//! (`listQueueEvents`, from the event store itself).

use std::time::Duration;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use crate::api::models::*;
use crate::api::problem::{Problem, ProblemJson, ProblemResponse, impl_problem};
use crate::api::types::{ETag, EventType, Int, QueueIdText};
use crate::api::{ApiTags, AppState};
use crate::domain::{QueueId, ValidationError};

/// How long `getQueue` waits for the read model to show a queue the event store already has
/// (it trails by milliseconds), so a client reads its own writes.
const READ_YOUR_WRITES: Duration = Duration::from_secs(3);

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum ListQueuesResponse {
    /// Every queue.
    #[oai(status = 200)]
    Ok(Json<Vec<QueueView>>),
    /// `invalid-request`.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(ListQueuesResponse { 400 => BadRequest, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum GetQueueResponse {
    /// The queue and its active patients; `ETag` is the stream version the read model shows.
    #[oai(status = 200)]
    Ok(Json<QueueDetail>, #[oai(header = "ETag")] ETag),
    /// `validation-error`: `queueId` is not a valid queue id.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(GetQueueResponse { 400 => BadRequest, 404 => NotFound, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum EventsResponse {
    /// The queue's events, oldest first; `ETag` is the stream's current version.
    #[oai(status = 200)]
    Ok(Json<EventPage>, #[oai(header = "ETag")] ETag),
    /// `validation-error` (`queueId`, `limit` 1–1000, `afterVersion` 0–2147483647) or `invalid-request`.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `queue-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `service-unavailable`: Postgres is unavailable; retry.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(EventsResponse { 400 => BadRequest, 404 => NotFound, 503 => Unavailable });

fn queue_not_found(queue_id: &QueueId) -> Problem {
    Problem::not_found(
        "queue-not-found",
        format!("queue {queue_id} does not exist"),
    )
}

/// Queue queries.
pub struct QueriesApi;

#[OpenApi]
impl QueriesApi {
    /// List queues (read model).
    #[oai(
        path = "/api/queues",
        method = "get",
        operation_id = "listQueues",
        tag = "ApiTags::Queues"
    )]
    async fn list_queues(&self, state: Data<&AppState>) -> ListQueuesResponse {
        match crate::projector::views::list_queues(state.store.pool()).await {
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
    async fn get_queue(
        &self,
        state: Data<&AppState>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
    ) -> GetQueueResponse {
        let queue_id = match QueueId::parse(&queue_id.0) {
            Ok(id) => id,
            Err(e) => return GetQueueResponse::from_problem(e.into()),
        };
        let pool = state.store.pool();
        let deadline = tokio::time::Instant::now() + READ_YOUR_WRITES;
        let mut in_store = None;
        loop {
            match crate::projector::views::queue_with_patients(pool, queue_id.as_str()).await {
                Ok(Some((queue, patients))) => {
                    let etag = ETag(i64::from(queue.updated_by_event_version));
                    let detail = QueueDetail {
                        queue: queue.into(),
                        patients: patients.into_iter().map(Into::into).collect(),
                    };
                    return GetQueueResponse::Ok(Json(detail), etag);
                }
                Ok(None) => {}
                Err(e) => return GetQueueResponse::from_problem(e.into()),
            }
            if in_store.is_none() {
                in_store = match state.store.stream_version(queue_id.as_str()).await {
                    Ok(v) => Some(v.is_some()),
                    Err(e) => {
                        return GetQueueResponse::from_problem(Problem::store(
                            &e,
                            queue_id.as_str(),
                        ));
                    }
                };
            }
            if in_store != Some(true) || tokio::time::Instant::now() >= deadline {
                return GetQueueResponse::from_problem(queue_not_found(&queue_id));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
        state: Data<&AppState>,
        #[oai(name = "queueId")] queue_id: Path<QueueIdText>,
        /// Only events with a greater version (default 0).
        #[oai(name = "afterVersion")]
        after_version: Query<Option<Int<0, 2_147_483_647>>>,
        /// At most this many events (default 100).
        limit: Query<Option<Int<1, 1000>>>,
    ) -> EventsResponse {
        let queue_id = match QueueId::parse(&queue_id.0) {
            Ok(id) => id,
            Err(e) => return EventsResponse::from_problem(e.into()),
        };
        let after = after_version.0.unwrap_or(Int(0));
        let limit = limit.0.unwrap_or(Int(100));
        if !after.in_range() {
            return EventsResponse::from_problem(Problem::validation(&ValidationError {
                field: "afterVersion",
                message: format!("must be between 0 and {}, got {}", i32::MAX, after.0),
            }));
        }
        if !limit.in_range() {
            return EventsResponse::from_problem(Problem::validation(&ValidationError {
                field: "limit",
                message: format!("must be between 1 and 1000, got {}", limit.0),
            }));
        }
        let store = &state.store;
        let version = match store.stream_version(queue_id.as_str()).await {
            Ok(Some(v)) => v,
            Ok(None) => return EventsResponse::from_problem(queue_not_found(&queue_id)),
            Err(e) => return EventsResponse::from_problem(Problem::store(&e, queue_id.as_str())),
        };
        let after = i32::try_from(after.0).unwrap_or(i32::MAX);
        match store.stream_events(queue_id.as_str(), after, limit.0).await {
            Ok(events) => {
                let events = events
                    .into_iter()
                    .map(|e| EventView {
                        event_id: e.event_id,
                        stream_id: e.stream_id,
                        version: e.version,
                        global_position: e.global_position,
                        event_type: stored(&e.event_type, EventType::WaitingQueueCreated),
                        occurred_at: e.occurred_at,
                        correlation_id: e.correlation_id,
                        causation_id: e.causation_id,
                        actor: e.actor,
                        data: serde_json::from_value(e.data).unwrap_or_default(),
                    })
                    .collect();
                let page = EventPage {
                    queue_id: queue_id.to_string(),
                    events,
                };
                EventsResponse::Ok(Json(page), ETag(i64::from(version)))
            }
            Err(e) => EventsResponse::from_problem(Problem::store(&e, queue_id.as_str())),
        }
    }
}
