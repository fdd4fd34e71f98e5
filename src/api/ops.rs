//! Operations endpoints: lag statistics, slowest events, one event's lifecycle, the outbox
//! backlog, projection health and rebuilds.

use std::sync::atomic::Ordering;

use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, OpenApi};

use super::models::*;
use super::problem::{Problem, ProblemJson, ProblemResponse, impl_problem};
use super::types::{EventIdText, Int, ProjectionsStatus, RebuildStatus, WindowSeconds};
use super::{ApiTags, AppState};
use crate::domain::ValidationError;
use crate::projector::{rebuild, views};

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum LagResponse {
    /// Statistics over the window.
    #[oai(status = 200)]
    Ok(Json<LagReportView>),
    /// `windowSeconds` outside 1–2592000.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(LagResponse { 400 => BadRequest, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum SlowestResponse {
    /// Slowest first.
    #[oai(status = 200)]
    Ok(Json<Vec<EventLag>>),
    /// `limit` outside 1–1000.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(SlowestResponse { 400 => BadRequest, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum EventLagResponse {
    /// The event's lifecycle.
    #[oai(status = 200)]
    Ok(Json<EventLag>),
    /// `validation-error`: `eventId` is not a UUID.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `event-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(EventLagResponse { 400 => BadRequest, 404 => NotFound, 503 => Unavailable });

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum OutboxResponse {
    /// The backlog.
    #[oai(status = 200)]
    Ok(Json<OutboxPending>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(OutboxResponse { 400 => BadRequest, 503 => Unavailable });

/// One body for every answer (progenitor and other generators want one error type per
/// operation); there is no input, so no 400.
#[derive(ApiResponse)]
pub enum ProjectionsHealthResponse {
    /// No stream is parked.
    #[oai(status = 200)]
    Healthy(Json<ProjectionsHealth>),
    /// `unhealthy`: a stream is parked (see `parked`); or `unknown`: Postgres is unavailable
    /// (see `detail`).
    #[oai(status = 503)]
    Unhealthy(Json<ProjectionsHealth>),
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "Self::bad_request")]
pub enum RebuildResponse {
    /// The rebuild started in the background; watch `/api/projections/health`.
    #[oai(status = 202)]
    Accepted(Json<RebuildAccepted>),
    /// Invalid request.
    #[oai(status = 400, content_type = "application/problem+json")]
    BadRequest(ProblemJson),
    /// `projection-not-found`.
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(ProblemJson),
    /// `rebuild-running`.
    #[oai(status = 409, content_type = "application/problem+json")]
    Conflict(ProblemJson),
    /// Postgres is unavailable.
    #[oai(status = 503, content_type = "application/problem+json")]
    Unavailable(ProblemJson),
}
impl_problem!(RebuildResponse { 400 => BadRequest, 404 => NotFound, 409 => Conflict, 503 => Unavailable });

/// Lag, outbox and projection operations.
pub struct OpsApi;

#[OpenApi]
impl OpsApi {
    /// End-to-end lag statistics (overall and per event type) of events created in the window.
    #[oai(
        path = "/api/metrics/lag",
        method = "get",
        operation_id = "getLagStatistics",
        tag = "ApiTags::Lag"
    )]
    async fn lag(
        &self,
        state: Data<&AppState>,
        /// Window length in seconds (default 300).
        #[oai(name = "windowSeconds")]
        window_seconds: Query<Option<WindowSeconds>>,
    ) -> LagResponse {
        let window = window_seconds.0.map_or(300.0, |w| w.0);
        if !window.is_finite() || !(1.0..=2_592_000.0).contains(&window) {
            return LagResponse::from_problem(Problem::validation(&ValidationError {
                field: "windowSeconds",
                message: format!("must be between 1 and 2592000, got {window}"),
            }));
        }
        match crate::lag::statistics(state.store.pool(), window).await {
            Ok(report) => LagResponse::Ok(Json(LagReportView {
                window_seconds: window,
                overall: report.overall.into(),
                by_event: report
                    .by_event
                    .into_iter()
                    .map(|(event_type, stats)| EventTypeLag {
                        event_type: stored(
                            &event_type,
                            super::types::EventType::WaitingQueueCreated,
                        ),
                        stats: stats.into(),
                    })
                    .collect(),
            })),
            Err(e) => LagResponse::from_problem(e.into()),
        }
    }

    /// The events with the largest end-to-end lag, with stage durations.
    #[oai(
        path = "/api/metrics/lag/slowest",
        method = "get",
        operation_id = "getSlowestEvents",
        tag = "ApiTags::Lag"
    )]
    async fn slowest(
        &self,
        state: Data<&AppState>,
        /// How many (default 10).
        limit: Query<Option<Int<1, 1000>>>,
    ) -> SlowestResponse {
        let limit = limit.0.map_or(10, |l| l.0);
        if !(1..=1000).contains(&limit) {
            return SlowestResponse::from_problem(Problem::validation(&ValidationError {
                field: "limit",
                message: format!("must be between 1 and 1000, got {limit}"),
            }));
        }
        let limit = i32::try_from(limit).unwrap_or(1000);
        match crate::lag::slowest(state.store.pool(), limit).await {
            Ok(events) => SlowestResponse::Ok(Json(events.into_iter().map(Into::into).collect())),
            Err(e) => SlowestResponse::from_problem(e.into()),
        }
    }

    /// One event's lifecycle: CREATED → PUBLISHED → PROCESSED (or FAILED), with stage durations.
    #[oai(
        path = "/api/metrics/lag/:eventId",
        method = "get",
        operation_id = "getEventLag",
        tag = "ApiTags::Lag"
    )]
    async fn event_lag(
        &self,
        state: Data<&AppState>,
        #[oai(name = "eventId")] event_id: Path<EventIdText>,
    ) -> EventLagResponse {
        // The hyphenated form only, as the schema's `format: uuid` says.
        let parsed = (event_id.len() == 36)
            .then(|| uuid::Uuid::try_parse(&event_id).ok())
            .flatten();
        let Some(id) = parsed else {
            return EventLagResponse::from_problem(Problem::validation(&ValidationError {
                field: "eventId",
                message: format!("must be a hyphenated UUID, got {:?}", event_id.as_str()),
            }));
        };
        match crate::lag::event(state.store.pool(), id).await {
            Ok(Some(l)) => EventLagResponse::Ok(Json(l.into())),
            Ok(None) => EventLagResponse::from_problem(Problem::not_found(
                "event-not-found",
                format!("event {id} does not exist"),
            )),
            Err(e) => EventLagResponse::from_problem(e.into()),
        }
    }

    /// The outbox backlog: unpublished rows, the oldest one's age, and dead rows.
    #[oai(
        path = "/api/outbox/pending",
        method = "get",
        operation_id = "getOutboxPending",
        tag = "ApiTags::Operations"
    )]
    async fn outbox(&self, state: Data<&AppState>) -> OutboxResponse {
        match crate::lag::outbox_backlog(state.store.pool()).await {
            Ok(b) => OutboxResponse::Ok(Json(OutboxPending {
                count: b.count,
                oldest_age_ms: b.oldest_age_ms,
                failed: b.failed,
            })),
            Err(e) => OutboxResponse::from_problem(e.into()),
        }
    }

    /// Projection checkpoints: how far behind each projection is and which streams are parked.
    #[oai(
        path = "/api/projections/health",
        method = "get",
        operation_id = "getProjectionsHealth",
        tag = "ApiTags::Operations"
    )]
    async fn projections_health(&self, state: Data<&AppState>) -> ProjectionsHealthResponse {
        let pool = state.store.pool();
        let health = match views::projection_health(pool).await {
            Ok(h) => h,
            Err(e) => {
                let problem = Problem::from(e);
                return ProjectionsHealthResponse::Unhealthy(Json(ProjectionsHealth {
                    status: ProjectionsStatus::Unknown,
                    projections: Vec::new(),
                    detail: Some(problem.detail),
                }));
            }
        };
        let mut projections = Vec::with_capacity(health.len());
        for h in health {
            let rebuilding = rebuild::is_running(pool, &h.name).await.unwrap_or(false);
            projections.push(ProjectionStatus {
                parked_streams: h.parked_count,
                parked: h
                    .parked
                    .into_iter()
                    .map(|p| ParkedStreamView {
                        stream_id: p.stream_id,
                        parked_version: p.parked_version,
                        error: p.error,
                        parked_at: p.parked_at,
                    })
                    .collect(),
                name: h.name,
                streams: h.streams,
                streams_behind: h.streams_behind,
                events_behind: h.events_behind,
                last_applied_at: h.last_applied_at,
                rebuilding,
            });
        }
        let parked = projections.iter().any(|p| p.parked_streams > 0);
        let body = ProjectionsHealth {
            status: if parked {
                ProjectionsStatus::Unhealthy
            } else {
                ProjectionsStatus::Healthy
            },
            projections,
            detail: None,
        };
        if parked {
            ProjectionsHealthResponse::Unhealthy(Json(body))
        } else {
            ProjectionsHealthResponse::Healthy(Json(body))
        }
    }

    /// Rebuild a projection from the event store in the background (clears parked streams).
    #[oai(
        path = "/api/projections/:name/rebuild",
        method = "post",
        operation_id = "rebuildProjection",
        tag = "ApiTags::Operations"
    )]
    async fn rebuild(
        &self,
        state: Data<&AppState>,
        /// The projection, e.g. `waiting_room`.
        name: Path<String>,
    ) -> RebuildResponse {
        let pool = state.store.pool().clone();
        match rebuild::exists(&pool, &name).await {
            Ok(true) => {}
            Ok(false) => {
                return RebuildResponse::from_problem(
                    crate::projector::ProjectorError::UnknownProjection(name.0.clone()).into(),
                );
            }
            Err(e) => return RebuildResponse::from_problem(e.into()),
        }
        let running_elsewhere = rebuild::is_running(&pool, &name).await.unwrap_or(false);
        if running_elsewhere || state.live.rebuilding.swap(true, Ordering::SeqCst) {
            return RebuildResponse::from_problem(
                crate::projector::ProjectorError::RebuildRunning(name.0.clone()).into(),
            );
        }
        let live = state.live.clone();
        let projection = name.0.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match rebuild::rebuild(&pool, &projection, |_, _| {}).await {
                Ok(r) => tracing::info!(
                    projection,
                    streams = r.streams,
                    events = r.events,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "rebuild finished"
                ),
                Err(e) => tracing::error!(projection, error = %e, "rebuild failed"),
            }
            live.rebuilding.store(false, Ordering::SeqCst);
        });
        RebuildResponse::Accepted(Json(RebuildAccepted {
            projection: name.0.clone(),
            status: RebuildStatus::Started,
        }))
    }
}
