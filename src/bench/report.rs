//! The result of a run: one JSON document (`--json`; the field names below are stable, and
//! `version` changes if they ever do) or a short aligned table. Durations are milliseconds
//! unless the name says otherwise; rates are per second of the measured window.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::floor::Floor;
use super::load::{Mode, Outcome};
use super::measure::{Drain, Lag, LagSource, Percentiles, Split, TypeLag};
use super::target::Target;
use super::{BenchArgs, WorkloadKind};

/// Version of the JSON document's shape.
pub const FORMAT_VERSION: u32 = 1;

/// Everything [`Report::new`] summarises.
pub struct Inputs<'a> {
    pub run_id: &'a str,
    pub target: &'a Target,
    pub args: &'a BenchArgs,
    pub mode: Mode,
    /// Length of the measured window.
    pub measured: Duration,
    pub outcome: Outcome,
    pub lag: Lag,
    pub drain: Drain,
    pub peak_rss: Option<u64>,
    pub floor: Option<Floor>,
}

/// The JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Random id of the run (in queue ids `bench-<run_id>-<n>`).
    pub run_id: String,
    /// `in-process (<database>)` or the `--url`.
    pub target: String,
    /// `clinic` or `growth`.
    pub workload: WorkloadKind,
    /// Queues loaded.
    pub queues: u32,
    /// Waiting patients kept per queue (`clinic`).
    pub patients: u32,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: workers; open loop: HTTP pool size.
    pub connections: u32,
    /// Open loop: target commands/s; null in closed loop.
    pub rate: Option<u32>,
    /// Open loop: in-flight cap; null in closed loop.
    pub max_in_flight: Option<u32>,
    /// Open loop: the target rate was held (≥ 95 % of it, 99 % of requests sent within
    /// 50 ms of their slot); null in closed loop.
    pub rate_held: Option<bool>,
    /// Open loop: how late requests left their slot; null in closed loop.
    pub dispatch_delay_ms: Option<Percentiles>,
    /// Warm-up seconds (load, not measured).
    pub warmup_s: u64,
    /// Measured seconds.
    pub duration_s: f64,
    /// Commands answered whose (scheduled) start was in the window, errors included.
    pub commands: u64,
    pub commands_per_s: f64,
    /// Events appended in the window (global positions in (start, end]).
    pub events: i64,
    pub events_per_s: f64,
    /// Commands answered with a non-2xx status or not at all.
    pub errors: u64,
    /// Errors by `"<status> <problem type slug>"` or `"transport"`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Answers by HTTP status (`"0"` = no answer).
    pub responses_by_status: BTreeMap<String, u64>,
    /// Client-side command latency (open loop: from the scheduled start).
    pub command_latency_ms: Option<Percentiles>,
    /// `commit_timestamps` (strict) or `lag_table_clock` (fallback).
    pub lag_source: LagSource,
    /// The lag-facts table read.
    pub lag_table: &'static str,
    /// End-to-end lag of the measured events, from `lag_source`.
    pub e2e_lag_ms: Option<Percentiles>,
    /// Events behind `e2e_lag_ms` (projected, with a lag figure).
    pub e2e_lag_events: i64,
    /// The facts table's in-transaction clock lag (`total_lag_ms`), for comparison.
    pub clock_lag_ms: Option<Percentiles>,
    /// Stage split from the facts table.
    pub stages_ms: Stages,
    /// E2E lag by event type.
    pub by_event_type: Vec<TypeLag>,
    /// Measured events whose projection failed.
    pub failed_events: i64,
    /// Load end → every measured event projected.
    pub drain: Drain,
    /// Peak `process_resident_memory_bytes` of the target during the run; null when it
    /// does not export it or with `--metrics-every 0`.
    pub peak_rss_bytes: Option<u64>,
    /// The target runs in this process, so its memory includes the load generator.
    pub rss_includes_generator: bool,
    /// `--compare-floor`: the floor; null otherwise.
    pub floor: Option<Floor>,
    /// E2E lag p50 / floor p50; null without a floor.
    pub lag_to_floor_ratio: Option<f64>,
}

/// Stage durations from the facts table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stages {
    /// Event created → confirmed published (`outbox_dispatch_duration_ms`).
    pub outbox_dispatch: Option<Split>,
    /// Published → projected (`projection_processing_duration_ms`).
    pub projection_processing: Option<Split>,
}

fn ms(h: &hdrhistogram::Histogram<u64>) -> Option<Percentiles> {
    let at = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    (!h.is_empty()).then(|| Percentiles {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        p999: at(0.999),
        max: h.max() as f64 / 1000.0,
    })
}

impl Report {
    /// Summarises a run.
    pub fn new(i: Inputs<'_>) -> Self {
        let seconds = i.measured.as_secs_f64().max(f64::EPSILON);
        let (mode, rate, max_in_flight) = match i.mode {
            Mode::Closed { .. } => ("closed", None, None),
            Mode::Open {
                rate,
                max_in_flight,
            } => ("open", Some(rate), Some(max_in_flight)),
        };
        let floor_ratio = match (i.floor, i.lag.e2e) {
            (Some(f), Some(e)) if f.p50_ms > 0.0 => Some(e.p50 / f.p50_ms),
            _ => None,
        };
        Self {
            version: FORMAT_VERSION,
            run_id: i.run_id.to_owned(),
            target: i.target.describe(),
            workload: i.args.workload,
            queues: i.args.queues,
            patients: i.args.patients,
            mode,
            connections: i.args.connections,
            rate,
            max_in_flight,
            rate_held: i.outcome.rate_held(i.mode, i.measured),
            dispatch_delay_ms: i.outcome.dispatch_delay.as_ref().and_then(ms),
            warmup_s: i.args.warmup,
            duration_s: i.measured.as_secs_f64(),
            commands: i.outcome.commands,
            commands_per_s: i.outcome.commands as f64 / seconds,
            events: i.lag.events,
            events_per_s: i.lag.events as f64 / seconds,
            errors: i.outcome.errors,
            errors_by_kind: i.outcome.errors_by_kind.clone(),
            responses_by_status: i
                .outcome
                .by_status
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            command_latency_ms: ms(&i.outcome.latency),
            lag_source: i.lag.source,
            lag_table: crate::bench::measure::LAG_FACTS,
            e2e_lag_ms: i.lag.e2e,
            e2e_lag_events: i.lag.measured,
            clock_lag_ms: i.lag.clock,
            stages_ms: Stages {
                outbox_dispatch: i.lag.outbox_dispatch,
                projection_processing: i.lag.projection_processing,
            },
            by_event_type: i.lag.by_type,
            failed_events: i.lag.failed,
            drain: i.drain,
            peak_rss_bytes: i.peak_rss,
            rss_includes_generator: i.target.is_in_process(),
            floor: i.floor,
            lag_to_floor_ratio: floor_ratio,
        }
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human report: one aligned line per figure.
    pub fn to_table(&self) -> String {
        let mut t = Table::default();
        t.row("target", format!("{} (run {})", self.target, self.run_id));
        let shape = match self.workload {
            WorkloadKind::Clinic => format!("{} waiting per queue", self.patients),
            WorkloadKind::Growth => "check-ins only".to_owned(),
        };
        t.row(
            "workload",
            format!("{}: {} queues, {shape}", name(&self.workload), self.queues),
        );
        t.row(
            "mode",
            match (self.rate, self.max_in_flight) {
                (Some(r), Some(m)) => format!("open loop, {r} commands/s target, ≤ {m} in flight"),
                _ => format!("closed loop, {} connections", self.connections),
            },
        );
        t.row(
            "duration",
            format!(
                "{:.1} s measured after {} s warm-up",
                self.duration_s, self.warmup_s
            ),
        );
        t.row(
            "commands",
            format!("{} ({:.1}/s)", self.commands, self.commands_per_s),
        );
        if let Some(held) = self.rate_held {
            let delay = self.dispatch_delay_ms.map_or(String::new(), |d| {
                format!(" (dispatch delay p99 {:.1} ms, max {:.1} ms)", d.p99, d.max)
            });
            t.row(
                "rate held",
                format!("{}{delay}", if held { "yes" } else { "NO" }),
            );
        }
        t.row(
            "events",
            format!("{} ({:.1}/s appended)", self.events, self.events_per_s),
        );
        let kinds: Vec<String> = self
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        t.row(
            "errors",
            if kinds.is_empty() {
                self.errors.to_string()
            } else {
                format!("{} ({})", self.errors, kinds.join(", "))
            },
        );
        t.row("command latency", percentiles(self.command_latency_ms));
        let source = match self.lag_source {
            LagSource::CommitTimestamps => "commit timestamps",
            LagSource::LagTableClock => "IN-TRANSACTION CLOCK (track_commit_timestamp is off)",
        };
        t.row("e2e lag", percentiles(self.e2e_lag_ms));
        t.row(
            "",
            format!(
                "{} events; {source}, {}",
                self.e2e_lag_events, self.lag_table
            ),
        );
        t.row("clock lag", percentiles(self.clock_lag_ms));
        for ty in &self.by_event_type {
            t.row(
                &format!("  {}", ty.event_type),
                format!(
                    "{:>6} events  p50 {}  p99 {}",
                    ty.count,
                    opt(ty.p50),
                    opt(ty.p99)
                ),
            );
        }
        t.row("outbox dispatch", split(self.stages_ms.outbox_dispatch));
        t.row("projection", split(self.stages_ms.projection_processing));
        if self.failed_events > 0 {
            t.row("failed events", self.failed_events.to_string());
        }
        t.row(
            "drain",
            if self.drain.completed {
                format!("{:.0} ms", self.drain.time_ms)
            } else {
                format!(
                    "NOT COMPLETE after {:.0} ms: {} events unprojected",
                    self.drain.time_ms, self.drain.left
                )
            },
        );
        let note = if self.rss_includes_generator {
            " (includes the load generator)"
        } else {
            ""
        };
        t.row(
            "peak RSS",
            self.peak_rss_bytes.map_or(
                "not measured (not exported, or --metrics-every 0)".to_owned(),
                |b| format!("{:.1} MiB{note}", b as f64 / (1024.0 * 1024.0)),
            ),
        );
        if let Some(f) = self.floor {
            t.row(
                "floor",
                format!(
                    "p50 {:.2}  p99 {:.2} ms ({} samples)",
                    f.p50_ms, f.p99_ms, f.samples
                ),
            );
        }
        if let Some(r) = self.lag_to_floor_ratio {
            t.row("e2e p50 / floor", format!("{r:.1}×"));
        }
        t.render()
    }
}

fn name(w: &WorkloadKind) -> &'static str {
    match w {
        WorkloadKind::Clinic => "clinic",
        WorkloadKind::Growth => "growth",
    }
}

fn percentiles(p: Option<Percentiles>) -> String {
    p.map_or("no samples".to_owned(), |p| {
        format!(
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2} ms",
            p.p50, p.p90, p.p99, p.p999, p.max
        )
    })
}

fn split(s: Option<Split>) -> String {
    s.map_or("no samples".to_owned(), |s| {
        format!("p50 {:.2}  p99 {:.2} ms", s.p50, s.p99)
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

/// Rows of label and value, rendered with the labels padded to one width.
#[derive(Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn row(&mut self, label: &str, value: String) {
        self.0.push((label.to_owned(), value));
    }

    fn render(&self) -> String {
        let width = self
            .0
            .iter()
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        let mut out = String::new();
        for (label, value) in &self.0 {
            // Writing into a String cannot fail.
            let _ = writeln!(out, "{label:<width$}{value}");
        }
        out
    }
}
