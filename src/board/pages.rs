//! The board's handlers: pages and assets (embedded with `include_str!`), the read-model
//! snapshots the pages render, and the event stream that tells them when to refetch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, stream};
use poem::http::StatusCode;
use poem::web::sse::{Event, SSE};
use poem::web::{Data, Path, Query};
use poem::{IntoResponse, Response, handler};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{Board, Change, display_name};
use crate::api::problem::Problem;
use crate::domain::QueueId;
use crate::projector::views;

const INDEX_HTML: &str = include_str!("assets/index.html");
const BOARD_HTML: &str = include_str!("assets/board.html");
const BOARD_CSS: &str = include_str!("assets/board.css");
const BOARD_JS: &str = include_str!("assets/board.js");
const INDEX_JS: &str = include_str!("assets/index.js");

/// Scripts and styles come from these files only; nothing inline, nothing from elsewhere.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'";
/// How long a new stream waits for the listener before saying the page may be stale.
const LIVE_WAIT: Duration = Duration::from_secs(2);
/// EventSource's reconnection delay (the browser's default is about 3 s).
const RETRY_MS: u64 = 1000;
/// Comment lines that keep proxies from closing an idle stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn asset(content_type: &'static str, body: &'static str) -> Response {
    // no-cache: revalidated on every load, so a new binary's pages are used at once.
    Response::builder()
        .content_type(content_type)
        .header("Cache-Control", "no-cache")
        .header("X-Content-Type-Options", "nosniff")
        .header("Content-Security-Policy", CSP)
        .header("Referrer-Policy", "no-referrer")
        .body(body)
}

fn html(body: &'static str) -> Response {
    asset("text/html; charset=utf-8", body)
}

/// An RFC 9457 response; the API middleware adds the correlation id.
pub(super) fn problem(p: Problem) -> Response {
    let mut body = serde_json::json!({
        "type": p.problem_type,
        "title": p.title,
        "status": p.status,
        "detail": p.detail,
    });
    if let Some(errors) = &p.errors {
        body["errors"] = errors
            .iter()
            .map(|e| serde_json::json!({"field": e.field, "message": e.message}))
            .collect();
    }
    Response::builder()
        .status(StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/problem+json")
        .body(body.to_string())
}

fn not_found(queue_id: &QueueId) -> Response {
    problem(Problem::not_found(
        "queue-not-found",
        format!("queue {queue_id} does not exist"),
    ))
}

/// `GET /`: the queue picker.
#[handler]
pub async fn index(_board: Data<&Board>) -> Response {
    html(INDEX_HTML)
}

/// `GET /board/{queueId}`: one queue. 400 for an id that cannot be a queue's, 404 for a
/// queue the read model does not have; when Postgres cannot answer the page is served anyway
/// (a wall screen must come back by itself: the page retries).
#[handler]
pub async fn board_page(board: Data<&Board>, Path(raw): Path<String>) -> Response {
    let queue_id = match QueueId::parse(&raw) {
        Ok(id) => id,
        Err(e) => return problem(Problem::validation(&e)),
    };
    match views::queue_exists(&board.pool, queue_id.as_str()).await {
        Ok(false) => not_found(&queue_id),
        Ok(true) => html(BOARD_HTML),
        Err(e) => {
            tracing::warn!(error = %e, "board: cannot check the queue; serving the page");
            html(BOARD_HTML)
        }
    }
}

#[handler]
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", BOARD_CSS)
}

#[handler]
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", BOARD_JS)
}

#[handler]
pub async fn index_js() -> Response {
    asset("text/javascript; charset=utf-8", INDEX_JS)
}

/// A queue in the picker.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QueueItem {
    queue_id: String,
    queue_name: String,
    waiting_count: i32,
    called_count: i32,
}

/// `GET /live/queues`: every queue, for the picker.
#[handler]
pub async fn queues(board: Data<&Board>) -> Response {
    match views::list_queues(&board.pool).await {
        Ok(rows) => json(
            &rows
                .into_iter()
                .map(|q| QueueItem {
                    queue_id: q.queue_id,
                    queue_name: q.queue_name,
                    waiting_count: q.waiting_count,
                    called_count: q.called_count,
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => problem(e.into()),
    }
}

/// One queue as the board shows it. No patient ids, no notes; names as `BOARD_NAMES` says.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BoardView {
    queue_id: String,
    queue_name: String,
    max_capacity: i32,
    /// `full` or `initials`.
    names: String,
    /// The server's clock, so pages count time waited without trusting theirs.
    server_time: DateTime<Utc>,
    /// Called patients, earliest call first.
    called: Vec<CalledView>,
    /// Waiting patients in call order.
    waiting: Vec<WaitingView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CalledView {
    name: String,
    priority: String,
    consultation_type: String,
    consulting_room: Option<String>,
    called_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WaitingView {
    position: Option<i32>,
    name: String,
    priority: String,
    consultation_type: String,
    checked_in_at: DateTime<Utc>,
}

/// `GET /live/queues/{queueId}`: the board's snapshot of one queue.
#[handler]
pub async fn snapshot(board: Data<&Board>, Path(raw): Path<String>) -> Response {
    let queue_id = match QueueId::parse(&raw) {
        Ok(id) => id,
        Err(e) => return problem(Problem::validation(&e)),
    };
    let (queue, patients) = match views::queue_with_patients(&board.pool, queue_id.as_str()).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(&queue_id),
        Err(e) => return problem(e.into()),
    };
    let mut view = BoardView {
        queue_id: queue.queue_id,
        queue_name: queue.queue_name,
        max_capacity: queue.max_capacity,
        names: board.names.to_string(),
        server_time: Utc::now(),
        called: Vec::new(),
        waiting: Vec::new(),
    };
    for p in patients {
        let name = display_name(&p.patient_name, board.names);
        if p.status == "CALLED" {
            view.called.push(CalledView {
                name,
                priority: p.priority,
                consultation_type: p.consultation_type,
                consulting_room: p.consulting_room,
                called_at: p.called_at,
            });
        } else {
            view.waiting.push(WaitingView {
                position: p.position_in_queue,
                name,
                priority: p.priority,
                consultation_type: p.consultation_type,
                checked_in_at: p.checked_in_at,
            });
        }
    }
    json(&view)
}

pub(super) fn json(value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => Response::builder()
            .content_type("application/json")
            .header("Cache-Control", "no-store")
            .body(body),
        Err(e) => problem(Problem::unavailable("the board", &e)),
    }
}

#[derive(Deserialize)]
pub struct EventsQuery {
    /// Only changes of this queue (default: every queue's).
    queue: Option<String>,
}

/// `GET /live/events[?queue=ID]`: Server-Sent Events. `live`: the feed announces every
/// change, (re)fetch the snapshot now; `change` (`{"queues":[…]}` or `{"all":true}`):
/// refetch; `stale`: the database listener is down, what is shown may be old. The stream
/// ends at shutdown; EventSource reconnects by itself and gets `live` again.
#[handler]
pub async fn events(board: Data<&Board>, Query(q): Query<EventsQuery>) -> Response {
    let queue = match q.queue.as_deref().map(QueueId::parse).transpose() {
        Ok(queue) => queue.map(|id| id.as_str().to_owned()),
        Err(e) => return problem(Problem::validation(&e)),
    };
    SSE::new(stream_for(board.0.clone(), queue))
        .keep_alive(KEEP_ALIVE)
        .into_response()
}

fn stream_for(board: Board, queue: Option<String>) -> impl Stream<Item = Event> + Send {
    // Subscribed before the page reads the read model (it does on `live`).
    let subscription = board.feed.subscribe();
    let feed = board.feed.clone();
    let first = async move {
        let live = feed.wait_live(LIVE_WAIT).await;
        stream::iter([Event::retry(RETRY_MS), status(live)])
    };
    let shutdown = board.shutdown.clone();
    let rest = stream::unfold(subscription, move |mut sub| {
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        async move {
            loop {
                let received = tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    r = sub.changes.recv() => r,
                };
                let event = match received {
                    Ok(Change::Live) | Err(RecvError::Lagged(_)) => status(true),
                    Ok(Change::Stale) => status(false),
                    Ok(change) if change.concerns(queue.as_deref()) => changed(&change),
                    Ok(_) => continue,
                    Err(RecvError::Closed) => return None,
                };
                return Some((event, sub));
            }
        }
    });
    stream::once(first).flatten().chain(rest)
}

fn status(live: bool) -> Event {
    Event::message("{}").event_type(if live { "live" } else { "stale" })
}

fn changed(change: &Change) -> Event {
    let data = match change {
        Change::Queues(ids) => serde_json::json!({ "queues": ids.as_ref() }),
        _ => serde_json::json!({ "all": true }),
    };
    Event::message(data.to_string()).event_type("change")
}
