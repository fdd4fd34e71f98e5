//! `GET /live/staff`: the figures of the board's staff line (lag over the last minute, outbox
//! backlog, projection state), open like the rest of the board. The page used to read them
//! from `/api/metrics/lag`, `/api/outbox/pending` and `/api/projections/health`, which need a
//! bearer token when API tokens are configured, and a wall screen holds no token. These are
//! aggregates only: counts and milliseconds, no queue or patient ids, no error texts.

use poem::web::Data;
use poem::{Response, handler};
use serde::Serialize;

use super::Board;
use super::pages::{json, problem};
use crate::projector::views;

/// The staff line.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StaffView {
    /// End-to-end lag of the events created in the last minute.
    lag: StaffLag,
    outbox: StaffOutbox,
    projection: StaffProjection,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StaffLag {
    count: i64,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StaffOutbox {
    /// Unpublished events the relay will still try.
    count: i64,
    /// Events the relay gave up on.
    failed: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StaffProjection {
    /// `healthy`, or `unhealthy` when a stream is parked.
    status: &'static str,
    events_behind: i64,
    parked_streams: i64,
}

/// The window of the lag figures, in seconds.
const LAG_WINDOW_SECONDS: f64 = 60.0;

#[handler]
pub async fn staff(board: Data<&Board>) -> Response {
    let pool = &board.pool;
    let lag = match crate::lag::statistics(pool, LAG_WINDOW_SECONDS).await {
        Ok(report) => report.overall,
        Err(e) => return problem(e.into()),
    };
    let outbox = match crate::lag::outbox_backlog(pool).await {
        Ok(b) => b,
        Err(e) => return problem(e.into()),
    };
    let projections = match views::projection_health(pool).await {
        Ok(h) => h,
        Err(e) => return problem(e.into()),
    };
    let events_behind = projections.iter().map(|p| p.events_behind).sum();
    let parked_streams = projections.iter().map(|p| p.parked.len() as i64).sum();
    json(&StaffView {
        lag: StaffLag {
            count: lag.count,
            p50_ms: lag.p50_ms,
            p95_ms: lag.p95_ms,
            p99_ms: lag.p99_ms,
        },
        outbox: StaffOutbox {
            count: outbox.count,
            failed: outbox.failed,
        },
        projection: StaffProjection {
            status: if parked_streams > 0 {
                "unhealthy"
            } else {
                "healthy"
            },
            events_behind,
            parked_streams,
        },
    })
}
