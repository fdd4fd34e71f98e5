#!/usr/bin/env python3
"""Where the CPU goes under load: per-process CPU per event and the top SQL statements.

    python3 bench/profile.py --url http://127.0.0.1:5099 --database-url postgres://…/db \
        [--rate 1500] [--duration 20] [--out bench/results/profile.md]

Run it against a running `waitroom run` (bench/run.sh's `profile` scenario does). It samples
/proc/<pid>/stat of the waitroom processes, RabbitMQ's Erlang VM, the load generator and every
Postgres backend (grouped by application_name) while `waitroom bench --rate R` runs, then
prints CPU microseconds per appended event per group and, when pg_stat_statements is loaded,
the statements with the most execution time (reset just before the load).
"""
import argparse
import json
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def psql(url, sql):
    out = subprocess.run(["psql", url, "-AtX", "-F", "\t", "-c", sql], check=True,
                         capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def pids_named(pattern):
    out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--rate", type=int, default=1500)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--bin", default="target/release/waitroom")
    ap.add_argument("--out")
    args = ap.parse_args()

    has_pss = bool(psql(args.database_url,
                        "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))
    if not has_pss:
        try:
            psql(args.database_url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            psql(args.database_url, "SELECT count(*) FROM pg_stat_statements")
            has_pss = True
        except subprocess.CalledProcessError:
            has_pss = False

    bench = subprocess.Popen(
        [args.bin, "bench", "--url", args.url, "--json", "--rate", str(args.rate),
         "--duration", str(args.duration), "--warmup", "2", "--metrics-every", "0"],
        env={**os.environ, "DATABASE_URL": args.database_url},
        stdout=subprocess.PIPE, text=True)
    time.sleep(3)  # past the warm-up: the measured window

    def groups():
        g = {"waitroom (API, relay, projector)": [p for p in pids_named("waitroom (run|serve)")],
             "load generator (waitroom bench)": [bench.pid],
             "RabbitMQ (beam.smp)": pids_named("beam.smp")}
        for pid, name in psql(args.database_url,
                              "SELECT pid, coalesce(nullif(application_name, ''), backend_type) "
                              "FROM pg_stat_activity WHERE pid <> pg_backend_pid()"):
            g.setdefault(f"Postgres: {name}", []).append(int(pid))
        return g

    if has_pss:
        psql(args.database_url, "SELECT pg_stat_statements_reset()")
    start_groups = groups()
    start_pos = int(psql(args.database_url, "SELECT coalesce(max(global_position), 0) FROM waiting_room_events")[0][0])
    start_cpu = {k: {p: cpu_seconds(p) for p in v} for k, v in start_groups.items()}
    t0 = time.monotonic()
    time.sleep(args.duration - 2)
    elapsed = time.monotonic() - t0
    end_pos = int(psql(args.database_url, "SELECT coalesce(max(global_position), 0) FROM waiting_room_events")[0][0])
    used = {}
    for k, pids in start_cpu.items():
        total = 0.0
        for p, before in pids.items():
            after = cpu_seconds(p)
            if before is not None and after is not None:
                total += after - before
        used[k] = total
    statements = []
    if has_pss:
        statements = psql(
            args.database_url,
            "SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3), rows, "
            "regexp_replace(left(query, 90), '\\s+', ' ', 'g') FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY total_exec_time DESC LIMIT 8")
    report = json.loads(bench.communicate()[0])
    events = max(end_pos - start_pos, 1)

    lines = [f"## Profile at {args.rate} commands/s offered ({elapsed:.0f} s sampled, {events} events, "
             f"{events / elapsed:.0f} events/s)", "",
             f"e2e lag p50 {report['e2e_lag_ms']['p50']:.1f} ms, p99 {report['e2e_lag_ms']['p99']:.1f} ms", "",
             "| process group | CPU % of one core | CPU µs per event |", "|---|---|---|"]
    for k, v in sorted(used.items(), key=lambda kv: -kv[1]):
        if v > 0.005 * elapsed:
            lines.append(f"| {k} | {100 * v / elapsed:.0f} | {1e6 * v / events:.0f} |")
    total = sum(used.values())
    lines.append(f"| **all** | {100 * total / elapsed:.0f} | {1e6 * total / events:.0f} |")
    if has_pss:
        lines += ["", "Top statements by total execution time (pg_stat_statements, top-level):", "",
                  "| calls | total ms | mean ms | rows | µs per event | statement |", "|---|---|---|---|---|---|"]
        for calls, total_ms, mean, rows, query in statements:
            per_event = 1000 * float(total_ms) / events
            query = query.replace("|", "\\|")
            lines.append(f"| {calls} | {total_ms} | {mean} | {rows} | {per_event:.0f} | `{query}` |")
    else:
        lines += ["", "(pg_stat_statements is not loaded: no statement profile)"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
