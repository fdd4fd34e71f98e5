//! The HTTP API (`waitroom serve`): poem-openapi endpoints with typed requests and
//! responses, problem+json errors, correlation ids, idempotency keys, health, metrics,
//! the OpenAPI document at `/openapi.json` and Swagger UI at `/docs`; API tokens on `/api`.

pub mod auth;
mod health;
mod middleware;
mod models;
mod ops;
pub(crate) mod problem;
mod queues;
mod spec;
pub mod types;

use std::sync::Arc;

use lapin::{Channel, Connection};
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, IntoEndpoint, Route, Server};
use poem_openapi::{OpenApiService, Tags};
use tokio::sync::Mutex;

pub use auth::ApiTokens;
pub use middleware::{ACTOR_HEADER, CORRELATION_HEADER, RequestContext};

use crate::board::Board;
use crate::broker::BrokerNames;
use crate::state::LiveState;
use crate::store::Store;
use crate::telemetry::Metrics;

#[derive(Tags)]
enum ApiTags {
    /// Waiting queues: commands and read models.
    Queues,
    /// Per-event lag tracking.
    Lag,
    /// Outbox and projections.
    Operations,
    /// Liveness, readiness and metrics.
    Health,
}

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub live: Arc<LiveState>,
    pub amqp_url: String,
    pub names: BrokerNames,
    /// Accepted bearer tokens for `/api` (none: open).
    pub tokens: Arc<ApiTokens>,
    /// A lazily (re)connected channel for readiness checks.
    broker: Arc<Mutex<Option<(Connection, Channel)>>>,
}

impl AppState {
    /// State for the API handlers.
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        live: Arc<LiveState>,
        amqp_url: String,
        names: BrokerNames,
    ) -> Self {
        Self {
            store,
            metrics,
            live,
            amqp_url,
            names,
            tokens: Arc::default(),
            broker: Arc::default(),
        }
    }

    /// The same state requiring one of `tokens` on `/api` (none: open).
    pub fn with_tokens(mut self, tokens: ApiTokens) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }
}

type Apis = (
    queues::CommandsApi,
    queues::QueriesApi,
    ops::OpsApi,
    health::HealthApi,
);

/// The operations; they take the state through `Data<&AppState>`, so building the document
/// needs no connection.
fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            queues::CommandsApi,
            queues::QueriesApi,
            ops::OpsApi,
            health::HealthApi,
        ),
        "waitroom",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Clinic waiting rooms on an event-sourced Postgres pipeline: commands append events, \
         a NOTIFY-woken outbox relay publishes them to RabbitMQ, and SQL projections keep the \
         read models current within milliseconds. Errors are RFC 9457 application/problem+json. \
         Responses about a queue carry its stream version as `ETag`; commands on a queue accept \
         `If-Match` (412 when the queue has moved on) and `Idempotency-Key`.",
    )
    .license(poem_openapi::LicenseObject::new("MIT"))
    .extra_request_header::<Option<String>, _>(poem_openapi::ExtraHeader::new(CORRELATION_HEADER).description(
        "Optional correlation id; stored in event metadata and sent as the AMQP correlation id. \
         A value that is not 1–128 printable ASCII characters is ignored and a new id generated.",
    ))
    .extra_request_header::<Option<String>, _>(
        poem_openapi::ExtraHeader::new(ACTOR_HEADER).description(
            "Optional: who issues the command, stored as the events' actor (default `api`). \
             A value that is not 1–128 printable ASCII characters is ignored.",
        ),
    )
    .extra_response_header::<String, _>(
        poem_openapi::ExtraHeader::new(CORRELATION_HEADER).description("The request's correlation id."),
    )
}

/// The OpenAPI document as pretty JSON (what `waitroom openapi` prints, `/openapi.json`
/// serves and `openapi/waitroom.json` holds).
pub fn spec() -> String {
    spec::finish(&service().spec())
}

/// The whole HTTP app: API, `/openapi.json`, `/docs` and the live board (`/`, outside the
/// spec), wrapped in the correlation/token/problem middleware.
pub fn app(state: AppState, board: Board) -> impl Endpoint {
    let metrics = state.metrics.clone();
    let tokens = state.tokens.clone();
    let service = service();
    let raw = service.spec();
    let document = spec::finish(&raw);
    // Swagger UI embeds the document verbatim: swap poem-openapi's for the finished one.
    let docs_html = service.swagger_ui_html().replace(&raw, &document);
    let allow = Arc::new(spec::AllowTable::new(
        &document,
        &[
            "/openapi.json",
            "/docs",
            "/",
            "/board/{queueId}",
            "/assets/board.css",
            "/assets/board.js",
            "/assets/index.js",
            "/live/queues",
            "/live/queues/{queueId}",
            "/live/events",
            "/live/staff",
        ],
    ));
    let spec_json = document.clone();
    // The API's paths are absolute (`/api/…`, `/health…`, `/metrics`): mounted under those
    // prefixes, not at `/`, which belongs to the board. A new top-level API path needs a
    // line here (tests/pipeline/board.rs checks the spec's paths).
    let api = Arc::new(service.into_endpoint());
    let route = Route::new()
        .nest_no_strip("/api", api.clone())
        .nest_no_strip("/health", api.clone())
        .at("/metrics", api)
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| {
                poem::Response::builder()
                    .content_type("application/json")
                    .body(spec_json.clone())
            }),
        )
        .nest(
            "/docs",
            Route::new().at(
                "/",
                poem::endpoint::make_sync(move |_| poem::web::Html(docs_html.clone())),
            ),
        );
    crate::board::mount(route, board)
        .data(state)
        .around(move |ep, req| {
            middleware::around(ep, req, metrics.clone(), allow.clone(), tokens.clone())
        })
}

/// Whether an `Accept` header asks for the classic text format (0.0.4) rather than
/// OpenMetrics: it names `text/plain` and not `application/openmetrics-text`. Prometheus
/// asks for OpenMetrics first; promtool and older scrapers read the classic format.
pub fn wants_classic_text(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("text/plain") && !a.contains("application/openmetrics-text"))
}

/// The metrics listener of `METRICS_ADDR`: `GET /metrics` (the same metrics as the API's;
/// OpenMetrics, or the classic text format when `Accept` asks for `text/plain`) and
/// `GET /health` (liveness), so relays and projectors running without the API can be
/// scraped and probed. Not part of the OpenAPI document: it is not the API.
pub fn metrics_app(state: AppState) -> impl Endpoint {
    let metrics = poem::endpoint::make(move |req: poem::Request| {
        let state = state.clone();
        async move {
            health::refresh(&state).await;
            if wants_classic_text(req.header("accept")) {
                poem::Response::builder()
                    .content_type("text/plain; version=0.0.4; charset=utf-8")
                    .body(state.metrics.encode_classic())
            } else {
                poem::Response::builder()
                    .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
                    .body(state.metrics.encode())
            }
        }
    });
    let health = poem::endpoint::make_sync(|_| {
        poem::Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(r#"{"status":"ok"}"#)
    });
    Route::new()
        .at("/metrics", poem::get(metrics))
        .at("/health", poem::get(health))
}

/// Serves [`metrics_app`] on an already-bound listener until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            metrics_app(state),
            shutdown,
            Some(std::time::Duration::from_secs(2)),
        )
        .await
}

/// Serves `app` on an already-bound listener until `shutdown` resolves, then drains
/// in-flight requests for at most 10 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    board: Board,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(
            app(state, board),
            shutdown,
            Some(std::time::Duration::from_secs(10)),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::wants_classic_text;

    #[test]
    fn only_an_accept_naming_text_plain_and_not_openmetrics_gets_the_classic_format() {
        assert!(wants_classic_text(Some("text/plain; version=0.0.4")));
        assert!(!wants_classic_text(None));
        assert!(!wants_classic_text(Some("*/*")));
        // What Prometheus sends: OpenMetrics first, the classic format as a fallback.
        assert!(!wants_classic_text(Some(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
        )));
    }
}
