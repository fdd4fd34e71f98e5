#!/usr/bin/env python3
"""Renders the lag and throughput panels of the "waitroom" Grafana dashboard from
`waitroom bench --json` reports, for places where Grafana does not run (CI, this README).

    bench/panels.sh REPORT.json [REPORT.json ...] [-o OUT.png]     # installs matplotlib
    python3 bench/panels.py REPORT.json [...] [-o OUT.png]         # where matplotlib exists

One bar group per report, ordered by achieved events/s, labelled with the report's file name:
  1. end-to-end lag percentiles (event commit -> read-model commit) against the 250 ms SLO,
  2. where the lag goes: outbox dispatch and projection, p50 and p99,
  3. throughput: the offered rate (open loop) against commands/s and events/s achieved,
  4. the highest-load report's p99 lag by event type.
The figures are the bench's own (`e2e_lag_ms`, `stages_ms`, `commands_per_s`, `events_per_s`,
`by_event_type`; see src/bench/report.rs), not recomputed.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SLO_MS = 250


def label(path, report):
    name = os.path.splitext(os.path.basename(path))[0]
    mode = f"{report['rate']:g}/s" if report.get("mode") == "open" and report.get("rate") else "closed loop"
    return f"{name}\n{mode}"


def main():
    ap = argparse.ArgumentParser(description="lag and throughput panels from waitroom bench --json reports")
    ap.add_argument("reports", nargs="+")
    ap.add_argument("-o", "--out", default="panels.png")
    args = ap.parse_args()

    runs = []
    for path in args.reports:
        with open(path) as f:
            report = json.load(f)
        if not report.get("e2e_lag_ms"):
            print(f"panels.py: {path}: no e2e_lag_ms (a run with --drain-timeout 0?), skipped", file=sys.stderr)
            continue
        runs.append((label(path, report), report))
    if not runs:
        print("panels.py: no report with lag figures", file=sys.stderr)
        return 1
    runs.sort(key=lambda r: r[1]["events_per_s"])
    names = [n for n, _ in runs]
    x = range(len(runs))

    fig, ((lag, stages), (tput, types)) = plt.subplots(2, 2, figsize=(14, 9))

    width = 0.8 / 5
    for i, key in enumerate(["p50", "p90", "p99", "p999", "max"]):
        lag.bar([j + (i - 2) * width for j in x], [r["e2e_lag_ms"][key] for _, r in runs], width,
                label=key.replace("p999", "p99.9"))
    lag.axhline(SLO_MS, color="red", linestyle="--", linewidth=1, label="SLO 250 ms")
    lag.set_yscale("log")
    lag.set_ylabel("ms")
    lag.set_title("Event lag: created -> projected (commit to commit)")
    lag.legend(fontsize=8, ncol=3)

    width = 0.8 / 4
    for i, (stage, key, name) in enumerate([("outbox_dispatch", "p50", "dispatch p50"),
                                           ("outbox_dispatch", "p99", "dispatch p99"),
                                           ("projection_processing", "p50", "projection p50"),
                                           ("projection_processing", "p99", "projection p99")]):
        values = [((r.get("stages_ms") or {}).get(stage) or {}).get(key) or 0 for _, r in runs]
        stages.bar([j + (i - 1.5) * width for j in x], values, width, label=name)
    stages.set_yscale("log")
    stages.set_ylabel("ms")
    stages.set_title("Lag by stage: outbox dispatch (created -> published), projection")
    stages.legend(fontsize=8, ncol=2)

    width = 0.8 / 3
    offered = [r["rate"] if r.get("mode") == "open" and r.get("rate") else 0 for _, r in runs]
    tput.bar([j - width for j in x], offered, width, label="offered rate (0: closed loop)", color="lightgray")
    tput.bar(list(x), [r["commands_per_s"] for _, r in runs], width, label="commands/s")
    tput.bar([j + width for j in x], [r["events_per_s"] for _, r in runs], width, label="events/s appended")
    for j, (_, r) in enumerate(runs):
        errors = r.get("errors") or 0
        if errors:
            tput.annotate(f"{errors} errors", (j, r["commands_per_s"]), ha="center", va="bottom", fontsize=7, color="red")
    tput.set_ylabel("per second")
    tput.set_title("Throughput")
    tput.legend(fontsize=8)

    top_name, top = runs[-1]
    by_type = sorted(top.get("by_event_type") or [], key=lambda t: t["event_type"])
    ty = range(len(by_type))
    types.barh([t - 0.2 for t in ty], [t["p50"] for t in by_type], 0.4, label="p50")
    types.barh([t + 0.2 for t in ty], [t["p99"] for t in by_type], 0.4, label="p99")
    types.axvline(SLO_MS, color="red", linestyle="--", linewidth=1, label="SLO 250 ms")
    types.set_yticks(list(ty), [f"{t['event_type']} ({t['count']})" for t in by_type], fontsize=8)
    types.set_xlabel("ms")
    types.set_title(f"Lag by event type: {top_name.splitlines()[0]} ({top['events_per_s']:.0f} events/s)")
    types.legend(fontsize=8, loc="lower right", framealpha=0.9)

    for ax in (lag, stages, tput):
        ax.set_xticks(list(x), names, fontsize=7)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    types.grid(True, axis="x", alpha=0.3)

    durations = sorted({r.get("duration_s") for _, r in runs})
    workloads = ", ".join(sorted({str(r.get("workload")) for _, r in runs}))
    measured = f"{durations[0]:g}" if len(durations) == 1 else f"{durations[0]:g}–{durations[-1]:g}"
    fig.suptitle(f"waitroom bench --json: {len(runs)} run(s), workload {workloads}, {measured} s measured per run")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
