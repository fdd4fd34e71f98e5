//! Logs (tracing) and metrics (prometheus-client). One [`Metrics`] registry per process,
//! shared by every role and served at `/metrics` (by the API, and on `METRICS_ADDR` by any
//! role), with the standard process metrics ([`process`]) and the Postgres pool gauges
//! ([`pool`]) beside the `waitroom_` ones. The alert rules and dashboards that read them are
//! in `infrastructure/` (docs/RUNBOOK.md explains each alert).

pub mod pool;
pub mod process;
pub mod redact;

use std::io::IsTerminal;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Installs the global tracing subscriber. `format` defaults to pretty on a terminal, else JSON.
/// Every line goes through [`redact::scrub`]: register the secrets first
/// ([`redact::register_settings`]).
pub fn init_logging(filter: &str, format: Option<LogFormat>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Pretty
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(redact::ScrubbedStderr);
    // try_init: tests and embedders may have installed one already.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `event_type` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventTypeLabel {
    pub event_type: String,
}

impl EventTypeLabel {
    /// Label for one event type.
    pub fn new(event_type: &str) -> Self {
        Self {
            event_type: event_type.to_owned(),
        }
    }
}

/// `projection` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabel {
    pub projection: String,
}

impl ProjectionLabel {
    /// Label for one projection.
    pub fn new(projection: &str) -> Self {
        Self {
            projection: projection.to_owned(),
        }
    }
}

/// `cause` label of relay wake-ups: `notify` (an append's NOTIFY), `sweep` (the safety
/// sweep found the relay asleep for [`crate::relay::SAFETY_SWEEP`]), `work` (events
/// arrived while it was going idle).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WakeLabel {
    pub cause: &'static str,
}

/// `method`, `route`, `status` labels of HTTP requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// `method`, `route` labels of HTTP latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

/// Every metric the process exports.
pub struct Metrics {
    registry: Registry,
    pub events_appended: Family<EventTypeLabel, Counter>,
    pub events_published: Family<EventTypeLabel, Counter>,
    pub publish_failures: Counter,
    pub events_projected: Family<ProjectionLabel, Counter>,
    pub projection_failures: Family<ProjectionLabel, Counter>,
    pub conflict_retries: Counter,
    /// Idempotency-Key records deleted by the retention job after `IDEMPOTENCY_TTL`.
    pub idempotency_keys_expired: Counter,
    pub event_lag: Histogram,
    pub outbox_dispatch: Histogram,
    pub outbox_pending: Gauge,
    pub outbox_oldest_pending_age: Gauge<f64, AtomicU64>,
    pub outbox_failed: Gauge,
    pub parked_streams: Family<ProjectionLabel, Gauge>,
    pub relay_leader: Gauge,
    pub relay_wakeups: Family<WakeLabel, Counter>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    /// 1 when some session holds the relay leader lock (read from Postgres on each scrape,
    /// so any role's scrape tells, wherever the relays run).
    pub relay_leader_present: Gauge,
    /// Age of the oldest transaction holding a transaction id on the Postgres cluster (read
    /// on each scrape): the commit-safe barrier an idle relay waits out before it sleeps.
    pub oldest_transaction_age: Gauge<f64, AtomicU64>,
    /// The process's Postgres pools, exported as `waitroom_db_pool_*`.
    pub pools: pool::Pools,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `waitroom_` prefix.
    pub fn new() -> Self {
        // The process metrics keep their conventional unprefixed names; ours live in a
        // `waitroom_` sub-registry.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::ProcessCollector));
        let pools = pool::Pools::default();
        root.register_collector(Box::new(pool::PoolCollector(pools.clone())));
        let registry = root.sub_registry_with_prefix("waitroom");
        let m = Self {
            events_appended: Family::default(),
            events_published: Family::default(),
            publish_failures: Counter::default(),
            events_projected: Family::default(),
            projection_failures: Family::default(),
            conflict_retries: Counter::default(),
            idempotency_keys_expired: Counter::default(),
            event_lag: latency_histogram(),
            outbox_dispatch: latency_histogram(),
            outbox_pending: Gauge::default(),
            outbox_oldest_pending_age: Gauge::default(),
            outbox_failed: Gauge::default(),
            parked_streams: Family::default(),
            relay_leader: Gauge::default(),
            relay_wakeups: Family::default(),
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            relay_leader_present: Gauge::default(),
            oldest_transaction_age: Gauge::default(),
            pools,
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoder appends it.
        registry.register(
            "events_appended",
            "Events appended to the store",
            m.events_appended.clone(),
        );
        registry.register(
            "events_published",
            "Events confirmed by RabbitMQ",
            m.events_published.clone(),
        );
        registry.register(
            "publish_failures",
            "Outbox publish attempts that failed",
            m.publish_failures.clone(),
        );
        registry.register(
            "events_projected",
            "Events applied to read models",
            m.events_projected.clone(),
        );
        registry.register(
            "projection_failures",
            "Streams parked because a projection function failed",
            m.projection_failures.clone(),
        );
        registry.register(
            "command_conflict_retries",
            "Commands re-decided after a concurrent append",
            m.conflict_retries.clone(),
        );
        registry.register(
            "idempotency_keys_expired",
            "Idempotency-Key records deleted after IDEMPOTENCY_TTL",
            m.idempotency_keys_expired.clone(),
        );
        registry.register(
            "event_lag_seconds",
            "End-to-end lag, event created to projected (Postgres clock)",
            m.event_lag.clone(),
        );
        registry.register(
            "outbox_dispatch_seconds",
            "Outbox dispatch time, event created to confirmed published",
            m.outbox_dispatch.clone(),
        );
        registry.register(
            "outbox_pending",
            "Unpublished outbox rows",
            m.outbox_pending.clone(),
        );
        registry.register(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row",
            m.outbox_oldest_pending_age.clone(),
        );
        registry.register(
            "outbox_failed",
            "Outbox rows the relay gave up on",
            m.outbox_failed.clone(),
        );
        registry.register(
            "projection_parked_streams",
            "Streams parked by a failing projection",
            m.parked_streams.clone(),
        );
        registry.register(
            "relay_leader",
            "1 when this process is the active relay",
            m.relay_leader.clone(),
        );
        registry.register(
            "relay_wakeups",
            "Times the relay went idle and was woken, by cause (notify, sweep, work)",
            m.relay_wakeups.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests served",
            m.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            m.http_duration.clone(),
        );
        registry.register(
            "relay_leader_present",
            "1 when some relay session holds the leader lock (from Postgres, on each scrape)",
            m.relay_leader_present.clone(),
        );
        registry.register(
            "oldest_transaction_age_seconds",
            "Age of the oldest transaction holding an xid on the Postgres cluster: the \
             commit-safe barrier an idle relay waits out (from Postgres, on each scrape)",
            m.oldest_transaction_age.clone(),
        );
        Self {
            registry: root,
            ..m
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same metrics in the classic Prometheus text format (0.0.4), for clients that ask
    /// for `text/plain` (promtool, older scrapers): counters carry `_total` in HELP and TYPE.
    pub fn encode_classic(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}
