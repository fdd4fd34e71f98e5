#!/usr/bin/env python3
"""Plots e2e lag percentiles against offered load from bench/results/sweep-*.json.

    python3 bench/plot.py [RESULTS_DIR]     # writes RESULTS_DIR/lag-vs-load.png

Needs matplotlib (pip install matplotlib). The data come from bench/run.sh's sweep scenario:
`waitroom bench --rate R --json` against a separate `waitroom run`, one fresh pipeline per rate.
"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main() -> int:
    results = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results")
    runs = []
    for path in glob.glob(os.path.join(results, "sweep-*.json")):
        with open(path) as f:
            report = json.load(f)
        if report.get("e2e_lag_ms"):
            runs.append(report)
    if not runs:
        print(f"plot.py: no sweep results in {results}", file=sys.stderr)
        return 1
    runs.sort(key=lambda r: r["rate"])
    events = [r["events_per_s"] for r in runs]

    fig, (lag, cmd) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key, label, style in [("p50", "p50", "o-"), ("p90", "p90", "s-"), ("p99", "p99", "^-"), ("max", "max", "x:")]:
        lag.plot(events, [r["e2e_lag_ms"][key] for r in runs], style, label=label)
    lag.axhline(250, color="red", linestyle="--", linewidth=1, label="SLO p99 250 ms")
    lag.axhline(25, color="orange", linestyle="--", linewidth=1, label="target p99 at 1,000/s: 25 ms")
    lag.set_yscale("log")
    lag.set_xlabel("events/s appended (open loop)")
    lag.set_ylabel("e2e lag, ms (event commit → read-model commit)")
    lag.set_title("End-to-end lag vs load")
    lag.grid(True, which="both", alpha=0.3)
    lag.legend()

    for key, style in [("p50", "o-"), ("p99", "^-")]:
        cmd.plot(events, [r["command_latency_ms"][key] for r in runs], style, label=key)
    cmd.set_yscale("log")
    cmd.set_xlabel("events/s appended (open loop)")
    cmd.set_ylabel("command latency, ms (from scheduled start)")
    cmd.set_title("HTTP command latency vs load")
    cmd.grid(True, which="both", alpha=0.3)
    cmd.legend()

    fig.suptitle("waitroom on 2 vCPU: Postgres, RabbitMQ, waitroom run and the load generator together")
    fig.tight_layout()
    out = os.path.join(results, "lag-vs-load.png")
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
