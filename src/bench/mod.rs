//! `waitroom bench`: a load generator that drives the HTTP API and judges the pipeline the
//! strict way, from the database: end-to-end lag is the commit time of an event's row to
//! the commit time of the transaction that wrote the read model for it.
//!
//! - [`target`]: the API under load: a running service (`--url`) or an in-process pipeline
//!   on a fresh database and broker names, removed afterwards.
//! - [`workload`]: which command comes next (`clinic`: steady queues; `growth`: check-ins).
//! - [`load`]: closed-loop workers or an open-loop schedule; client-side latencies.
//! - [`http`]: the requests, queue creation and the target's peak memory from `/metrics`.
//! - [`measure`]: positions, drain, lag percentiles and stage split in SQL.
//! - [`floor`]: the bare cost of Postgres commit + NOTIFY + one confirmed AMQP message.
//! - [`report`]: the JSON document and the human table.

pub mod floor;
pub mod http;
pub mod load;
pub mod measure;
pub mod report;
pub mod target;
pub mod workload;

use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::config::Settings;
use crate::store::ConnectError;
use load::{LoadPlan, Mode};
use report::Report;
use target::Target;
use workload::Workload;

/// Options of `waitroom bench`.
#[derive(Debug, Clone, Args, PartialEq, Eq)]
pub struct BenchArgs {
    /// Base URL of a running waitroom API to load (e.g. `http://127.0.0.1:5000`); the global
    /// `--database-url` must then be that service's database. Without it, bench runs its own
    /// pipeline in-process on a fresh database on the `DATABASE_URL` server (dropped afterwards).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The command mix.
    #[arg(long, value_enum, default_value_t = WorkloadKind::Clinic)]
    pub workload: WorkloadKind,
    /// Queues created at start (`bench-<runid>-<n>`, capacity 10000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub queues: u32,
    /// Waiting patients the `clinic` workload keeps in each queue.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub patients: u32,
    /// Closed loop: workers that each send the next request when the previous one answered.
    /// In open loop (`--rate`), sizes the HTTP connection pool.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_024))]
    pub connections: u32,
    /// Open loop: commands per second, sent at fixed intervals whatever the responses
    /// (each command appends exactly one event). Latency counts from the scheduled start.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: Option<u32>,
    /// Open loop: most requests in flight at once (default: 4 × `--connections`); past it,
    /// requests wait, and the wait counts in their latency.
    #[arg(long, requires = "rate", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight: Option<u32>,
    /// Measured seconds of load.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub duration: u64,
    /// Seconds of load before measuring starts (not counted).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub warmup: u64,
    /// Also measure the floor: Postgres commit + NOTIFY + one persistent, confirmed AMQP
    /// message consumed, ~200 times, and report e2e lag p50 / floor p50.
    #[arg(long)]
    pub compare_floor: bool,
    /// Seconds between reads of the target's `/metrics` for its peak resident memory; 0 turns
    /// them off (a scrape costs the service some database work of its own).
    #[arg(long, default_value_t = 1, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub metrics_every: u64,
    /// Longest wait, after the load, for the measured events to be projected; 0 = do not
    /// wait, nor for the created queues to reach the read model before the load (appends-only
    /// runs against `waitroom serve`, where nothing projects).
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub drain_timeout: u64,
    /// Print one JSON document on stdout instead of the table (no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// `--workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// Check-ins, call-next, complete, no-show and cancel keeping each queue's size steady.
    Clinic,
    /// Check-ins only: queues grow.
    Growth,
}

/// Why a bench run could not be done; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Database(#[from] ConnectError),
    #[error("cannot start the in-process pipeline: {0}")]
    Startup(#[from] crate::app::StartupError),
    #[error(
        "cannot reach the waitroom API at {url}: {reason} (start it with `waitroom run`, or omit --url)"
    )]
    Unreachable { url: String, reason: String },
    #[error("--url {0} is not an http:// or https:// URL")]
    InvalidUrl(String),
    #[error(
        "{target} has no waitroom event store: with --url, --database-url must be the service's database"
    )]
    NotWaitroom { target: String },
    #[error("PostgreSQL query failed ({what}): {source}")]
    Query {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("cannot create queue {queue}: {reason}")]
    QueueSetup { queue: String, reason: String },
    #[error(
        "the created queues did not reach the read model within {0:?}: is the projector running?"
    )]
    QueuesNotProjected(Duration),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    #[error("the load generator stopped: {0}")]
    Driver(String),
    #[error("floor measurement failed: {0}")]
    Floor(String),
    #[error("interrupted")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Query { what, source }
    }
}

/// How long the created queues may take to appear in the read model.
const QUEUES_VISIBLE_WITHIN: Duration = Duration::from_secs(30);

/// The log filter for a bench run: the in-process pipeline's `info` lines would bury the
/// progress bar, so the default `info` becomes `warn` unless `RUST_LOG` asks for it.
pub fn log_filter(settings: &Settings) -> &str {
    if settings.rust_log == "info" && std::env::var_os("RUST_LOG").is_none() {
        "warn"
    } else {
        &settings.rust_log
    }
}

/// Runs the bench and prints its report (JSON or table) on stdout. Everything it created
/// (queues aside, when `--url` targets a running service) is removed, even on failure or
/// Ctrl-C.
pub async fn run(settings: Settings, args: BenchArgs) -> Result<(), BenchError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let target = Target::start(&settings, &args, &run_id).await?;
    let result = tokio::select! {
        r = bench(&settings, &args, &run_id, &target) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    target.stop().await;
    let report = result?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

async fn bench(
    settings: &Settings,
    args: &BenchArgs,
    run_id: &str,
    target: &Target,
) -> Result<Report, BenchError> {
    let http = http::client(args, settings.api_token.as_ref().map(|t| t.expose()))?;
    http::check_reachable(&http, &target.url).await?;
    let db = measure::Measurer::connect(&target.database).await?;
    if db.source() == measure::LagSource::LagTableClock {
        eprintln!(
            "warning: track_commit_timestamp is off on {}: e2e lag falls back to the lag table's \
             in-transaction clock (total_lag_ms), not commit times",
            target.database.target()
        );
    }

    let queues: Vec<String> = (1..=args.queues)
        .map(|n| format!("bench-{run_id}-{n}"))
        .collect();
    http::create_queues(&http, &target.url, &queues).await?;
    // With --drain-timeout 0 nothing is expected to project (appends-only runs).
    if args.drain_timeout > 0 {
        db.wait_queues_visible(&queues, QUEUES_VISIBLE_WITHIN)
            .await?;
    }

    let workload = Workload::new(args.workload, queues, args.patients);
    let mode = match args.rate {
        Some(rate) => Mode::Open {
            rate,
            max_in_flight: args.max_in_flight.unwrap_or(args.connections * 4),
        },
        None => Mode::Closed {
            connections: args.connections,
        },
    };
    let begin = Instant::now();
    let plan = LoadPlan {
        mode,
        measure_from: begin + Duration::from_secs(args.warmup),
        stop_at: begin + Duration::from_secs(args.warmup + args.duration),
    };
    let memory = http::MemorySampler::spawn(
        http.clone(),
        target.url.clone(),
        Duration::from_secs(args.metrics_every),
    );
    let progress = load::Progress::new(args, plan.stop_at - begin);
    // Without a warm-up the window opens with the first command: read the position first.
    let early_start = if args.warmup == 0 {
        Some(db.position().await?)
    } else {
        None
    };
    let driver = tokio::spawn(load::drive(
        http.clone(),
        target.url.clone(),
        workload,
        plan.clone(),
        progress.counters(),
    ));

    tokio::time::sleep_until(plan.measure_from.into()).await;
    let start = match early_start {
        Some(position) => position,
        None => db.position().await?,
    };
    tokio::time::sleep_until(plan.stop_at.into()).await;
    let end = db.position().await?;
    // In-flight commands finish before the drain is judged (see `Measurer::drain`); the
    // drain is timed from the moment the generator stopped starting commands.
    let outcome = driver
        .await
        .map_err(|e| BenchError::Driver(e.to_string()))?;
    progress.finish();
    tracing::debug!(
        after_stop_ms = plan.stop_at.elapsed().as_secs_f64() * 1000.0,
        start,
        end,
        "bench: load finished, judging the drain"
    );
    let drain = db
        .drain(
            start,
            end,
            plan.stop_at,
            Duration::from_secs(args.drain_timeout),
        )
        .await?;
    // Stopped only now: a scrape can take a while (the service queries its database for
    // some gauges), and the drain is part of the run whose peak memory is reported.
    let peak_rss = memory.stop().await;
    let lag = db.lag(start, end).await?;
    let measured = plan.stop_at - plan.measure_from;

    let floor = if args.compare_floor {
        Some(floor::measure(&target.database, &settings.amqp_url, run_id).await?)
    } else {
        None
    };
    Ok(Report::new(report::Inputs {
        run_id,
        target,
        args,
        mode,
        measured,
        outcome,
        lag,
        drain,
        peak_rss,
        floor,
    }))
}
