//! The load drivers. Closed loop: N workers, each sending its next command when the last
//! one answered. Open loop: commands scheduled at fixed intervals whatever the answers,
//! in flight at most `max_in_flight`; latency counts from the *scheduled* start, so a
//! stalled target shows as latency instead of as fewer samples (coordinated omission).
//! Only commands whose (scheduled) start falls in the measured window are recorded.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::BenchArgs;
use super::http::{self, Answer};
use super::workload::Workload;

/// Open loop: the rate counts as held when the measured rate is at least this share of
/// the target and 99 % of requests left within [`LATE_DISPATCH`] of their slot.
const HELD_SHARE: f64 = 0.95;
/// See [`HELD_SHARE`].
const LATE_DISPATCH: Duration = Duration::from_millis(50);
/// Latencies are recorded in microseconds, up to an hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// How the load is generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `connections` workers, each with one request in flight.
    Closed { connections: u32 },
    /// `rate` commands per second, at most `max_in_flight` outstanding.
    Open { rate: u32, max_in_flight: u32 },
}

/// When the load runs and which part of it is measured.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The generation mode.
    pub mode: Mode,
    /// Start of the measured window (end of the warm-up).
    pub measure_from: Instant,
    /// When the load stops: no command starts (or is scheduled) from then on.
    pub stop_at: Instant,
}

impl LoadPlan {
    fn measured(&self, start: Instant) -> bool {
        start >= self.measure_from && start < self.stop_at
    }
}

/// What the client saw in the measured window.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Commands answered (errors included).
    pub commands: u64,
    /// Commands answered with a non-2xx status or not at all.
    pub errors: u64,
    /// Answers by HTTP status (`0` = no answer).
    pub by_status: BTreeMap<u16, u64>,
    /// Errors by `"<status> <problem type>"` or `"transport"`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Command latency in microseconds.
    pub latency: Histogram<u64>,
    /// Open loop: how late requests left relative to their slot, in microseconds.
    pub dispatch_delay: Option<Histogram<u64>>,
}

impl Outcome {
    fn new(open: bool) -> Self {
        Self {
            commands: 0,
            errors: 0,
            by_status: BTreeMap::new(),
            errors_by_kind: BTreeMap::new(),
            latency: histogram(),
            dispatch_delay: open.then(histogram),
        }
    }

    fn record(&mut self, latency: Duration, answer: &Answer) {
        self.commands += 1;
        self.latency.saturating_record(micros(latency));
        let status = match answer {
            Answer::Success { status, .. } | Answer::Failure { status, .. } => *status,
            Answer::Transport => 0,
        };
        *self.by_status.entry(status).or_default() += 1;
        if let Some(kind) = answer.error_kind() {
            self.errors += 1;
            *self.errors_by_kind.entry(kind).or_default() += 1;
        }
    }

    /// Open loop: whether the target rate was held over `measured` (see [`HELD_SHARE`]).
    pub fn rate_held(&self, mode: Mode, measured: Duration) -> Option<bool> {
        let Mode::Open { rate, .. } = mode else {
            return None;
        };
        let achieved = self.commands as f64 / measured.as_secs_f64();
        let punctual = self
            .dispatch_delay
            .as_ref()
            .is_none_or(|d| d.is_empty() || d.value_at_quantile(0.99) <= micros(LATE_DISPATCH));
        Some(achieved >= HELD_SHARE * f64::from(rate) && punctual)
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("fixed bounds are valid")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Answers and errors so far (warm-up included), for the progress bar.
#[derive(Debug, Default)]
pub struct Counters {
    done: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn count(&self, answer: &Answer) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if answer.error_kind().is_some() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Everything a request task needs; cloned into each.
#[derive(Clone)]
struct Shared {
    http: reqwest::Client,
    url: Arc<str>,
    workload: Workload,
    plan: LoadPlan,
    outcome: Arc<Mutex<Outcome>>,
    counters: Arc<Counters>,
}

impl Shared {
    /// Picks and sends one command; latency counts from `start`.
    async fn command(&self, start: Instant) {
        let (mut queue, action) = self.workload.next().await;
        let answer = http::send(&self.http, &self.url, &queue.queue, &action).await;
        let latency = start.elapsed();
        queue.apply(
            &action,
            match &answer {
                Answer::Success { body, .. } => Some(body),
                _ => None,
            },
        );
        drop(queue);
        self.counters.count(&answer);
        if self.plan.measured(start) {
            // A poisoned lock only means another task panicked mid-record; keep counting.
            let mut outcome = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
            outcome.record(latency, &answer);
        }
    }
}

/// Runs the load until `plan.stop_at`, waits for the requests in flight, and returns what
/// the measured window saw.
pub async fn drive(
    http: reqwest::Client,
    url: String,
    workload: Workload,
    plan: LoadPlan,
    counters: Arc<Counters>,
) -> Outcome {
    let open = matches!(plan.mode, Mode::Open { .. });
    let shared = Shared {
        http,
        url: url.into(),
        workload,
        plan: plan.clone(),
        outcome: Arc::new(Mutex::new(Outcome::new(open))),
        counters,
    };
    match plan.mode {
        Mode::Closed { connections } => closed(&shared, connections).await,
        Mode::Open {
            rate,
            max_in_flight,
        } => open_loop(&shared, rate, max_in_flight).await,
    }
    let outcome = shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
    outcome.clone()
}

async fn closed(shared: &Shared, connections: u32) {
    let mut workers = JoinSet::new();
    for _ in 0..connections {
        let shared = shared.clone();
        workers.spawn(async move {
            loop {
                let start = Instant::now();
                if start >= shared.plan.stop_at {
                    break;
                }
                shared.command(start).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn open_loop(shared: &Shared, rate: u32, max_in_flight: u32) {
    let interval = Duration::from_secs(1) / rate;
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight as usize));
    let mut requests = JoinSet::new();
    let first = Instant::now();
    for i in 0u32.. {
        let scheduled = first + interval * i;
        if scheduled >= shared.plan.stop_at || Instant::now() >= shared.plan.stop_at {
            // A backlog left at the stop is not sent: it shows as a missed rate.
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        if shared.plan.measured(scheduled) {
            let delay = micros(scheduled.elapsed());
            let mut outcome = shared.outcome.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(d) = outcome.dispatch_delay.as_mut() {
                d.saturating_record(delay.max(1));
            }
        }
        let shared = shared.clone();
        requests.spawn(async move {
            shared.command(scheduled).await;
            drop(slot);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// The progress bar on stderr: elapsed / total seconds, commands/s, errors. Hidden with
/// `--json`, and by indicatif itself when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
    counters: Arc<Counters>,
    stop: CancellationToken,
}

impl Progress {
    /// A bar over `total` (warm-up + measured), ticking from now.
    pub fn new(args: &BenchArgs, total: Duration) -> Self {
        let bar = if args.json {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total.as_secs()).with_style(
                ProgressStyle::with_template(
                    "{spinner} {prefix:9} [{bar:30}] {pos}/{len} s  {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            )
        };
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        tokio::spawn(tick(
            bar.clone(),
            counters.clone(),
            Duration::from_secs(args.warmup),
            stop.clone(),
        ));
        Self {
            bar,
            counters,
            stop,
        }
    }

    /// The counters the drivers update.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Removes the bar (also done on drop, so an error mid-run leaves no bar behind).
    pub fn finish(&self) {
        self.stop.cancel();
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

async fn tick(
    bar: ProgressBar,
    counters: Arc<Counters>,
    warmup: Duration,
    stop: CancellationToken,
) {
    let started = Instant::now();
    // (time, answers) over the last second, for a rate that neither jumps nor lags.
    let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = Instant::now();
        let done = counters.done.load(Ordering::Relaxed);
        window.push_back((now, done));
        while window.len() > 5 {
            window.pop_front();
        }
        let rate = match (window.front(), window.back()) {
            (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => {
                (n1 - n0) as f64 / (*t1 - *t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let elapsed = now - started;
        bar.set_prefix(if elapsed < warmup {
            "warm-up"
        } else {
            "measuring"
        });
        bar.set_position(elapsed.as_secs());
        bar.set_message(format!(
            "{rate:.0} cmd/s, {} errors",
            counters.errors.load(Ordering::Relaxed)
        ));
    }
}
