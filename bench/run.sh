#!/usr/bin/env bash
# Produces every performance figure in the README's "Performance" section.
#
#   bash bench/run.sh            # all scenarios, ~15 minutes on 2 cores
#   bash bench/run.sh idle sweep # only these (names below)
#
# Each scenario starts the release binary as its own process (`waitroom run`, or
# `waitroom serve` for appends alone) on a fresh database, loads it with `waitroom bench
# --url … --json` from another process, and writes bench/results/<scenario>.json (the bench
# report; rebuild scenarios write {events, streams, seconds, events_per_s}). The server's log
# goes to bench/results/logs/. At the end bench/results/summary.md gathers the figures and
# bench/plot.py draws bench/results/lag-vs-load.png.
#
# Needs track_commit_timestamp = on for the strict e2e lag (commit of the event row to
# commit of the read-model write): scripts/services.sh turns it on for a local Postgres
# (a restart); for a remote one, set it there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/waitroom}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export AMQP_URL
PORT="${BENCH_PORT:-5099}"
URL="http://127.0.0.1:$PORT"
OUT=bench/results
BIN=target/release/waitroom
SERVER_PID=""

say() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 2; }

# The server of DATABASE_URL, with another database name (query parameters kept).
db_url() {
    local base="${DATABASE_URL%%\?*}" query=""
    [[ "$DATABASE_URL" == *\?* ]] && query="?${DATABASE_URL#*\?}"
    echo "${base%/*}/$1$query"
}
ADMIN="$(db_url postgres)"

stop_server() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
trap stop_server EXIT

# start ROLE DB: a fresh database DB, the role's process on $PORT, ready.
start() {
    local role="$1" db="$2"
    drop "$db"
    DATABASE_URL="$(db_url "$db")" BROKER_SUFFIX=benchrun HTTP_ADDR="127.0.0.1:$PORT" CONSOLE_ADDR=off \
        RUST_LOG=info LOG_FORMAT=json "$BIN" "$role" >"$OUT/logs/$db.log" 2>&1 &
    SERVER_PID=$!
    # `serve` alone is never ready (no relay leader, no projector consumer): wait for liveness.
    local probe=/health/ready
    [[ "$role" == run ]] || probe=/health
    for _ in $(seq 1 200); do
        if curl -fsS "$URL$probe" >/dev/null 2>&1; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || die "waitroom $role exited; see $OUT/logs/$db.log"
        sleep 0.1
    done
    die "waitroom $role not ready after 20 s; see $OUT/logs/$db.log"
}

# bench NAME DB ARGS…: one `waitroom bench` run against the running server.
bench() {
    local name="$1" db="$2"; shift 2
    say "$name: waitroom bench $*"
    DATABASE_URL="$(db_url "$db")" "$BIN" bench --url "$URL" --json "$@" >"$OUT/$name.json"
    jq -r '"bench: \(.mode) \(.events_per_s|floor) events/s, e2e p50 \(.e2e_lag_ms.p50 // "-") ms p99 \(.e2e_lag_ms.p99 // "-") ms, drain \(.drain.time_ms|floor) ms"' \
        "$OUT/$name.json" >&2 || true
}

# rebuild NAME DB: time `waitroom rebuild` of the waiting-room projection on DB.
rebuild() {
    local name="$1" db="$2" line
    line="$(DATABASE_URL="$(db_url "$db")" "$BIN" rebuild 2>/dev/null | tail -1)"
    say "$name: $line"
    # "rebuilt waiting_room: N events in S streams in X s (R events/s)"
    awk '{ printf "{\"events\": %d, \"streams\": %d, \"seconds\": %s, \"events_per_s\": %.0f}\n",
                  $3, $6, $9, $3 / $9 }' <<<"$line" >"$OUT/$name.json"
}

drop() { psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" >/dev/null; }

# ----------------------------------------------------------------------- scenarios

# Target 3: idle, one command every 20 ms, against the floor measured in the same run.
scenario_idle() {
    start run waitroom_benchrun_idle
    bench idle waitroom_benchrun_idle --rate 50 --duration 20 --compare-floor
    stop_server; drop waitroom_benchrun_idle
}

# Target 2: 1,000 events/s paced.
scenario_moderate() {
    start run waitroom_benchrun_moderate
    bench moderate waitroom_benchrun_moderate --rate 1000 --duration 30 --warmup 5
    stop_server; drop waitroom_benchrun_moderate
}

# Target 1 and the plot: open loop at rising offered load, a fresh pipeline for each.
scenario_sweep() {
    local r
    for r in 250 500 1000 1500 2000 2500 3000; do
        start run waitroom_benchrun_sweep
        bench "sweep-$r" waitroom_benchrun_sweep --rate "$r" --duration 15 --warmup 3
        stop_server
    done
    drop waitroom_benchrun_sweep
}

# Target 1 (how far it goes) and target 6 on small queues: closed loop, 32 connections,
# then a rebuild of everything it appended.
scenario_closed() {
    start run waitroom_benchrun_closed
    bench closed waitroom_benchrun_closed --connections 32 --duration 30 --warmup 3
    stop_server
    rebuild rebuild-small-queues waitroom_benchrun_closed
    drop waitroom_benchrun_closed
}

# Target 5: the same paced load on queues of 10 and of 1,000 waiting patients.
scenario_queues() {
    start run waitroom_benchrun_q10
    bench queue-10 waitroom_benchrun_q10 --rate 500 --queues 5 --patients 10 --duration 20 --warmup 15
    stop_server; drop waitroom_benchrun_q10
    start run waitroom_benchrun_q1000
    bench queue-1000 waitroom_benchrun_q1000 --rate 500 --queues 5 --patients 1000 --duration 20 --warmup 15
    stop_server; drop waitroom_benchrun_q1000
}

# Target 6 on big queues: check-ins only over 40 queues (≈ 1,000 waiting each), rebuilt.
scenario_growth() {
    start run waitroom_benchrun_growth
    bench growth waitroom_benchrun_growth --workload growth --queues 40 --connections 32 --duration 25 --warmup 0
    stop_server
    rebuild rebuild-big-queues waitroom_benchrun_growth
    drop waitroom_benchrun_growth
}

# Target 4: appends alone (`waitroom serve`, closed loop) with the relay's idle flag pinned
# up (every append notifies: the worst case) and down (none does), twice each, alternating.
scenario_notify() {
    local i flag
    for i in 1 2; do
        for flag in 1 0; do
            start serve waitroom_benchrun_notify
            psql "$(db_url waitroom_benchrun_notify)" -qAtc "SELECT setval('relay_wakeup', $flag)" >/dev/null
            bench "notify-$flag-$i" waitroom_benchrun_notify --connections 32 --duration 15 --warmup 3 \
                --drain-timeout 0 --metrics-every 0
            stop_server
        done
    done
    drop waitroom_benchrun_notify
}

# Where the CPU goes at 1,500 commands/s: per-process CPU per event and the top statements
# (pg_stat_statements; loaded into a local Postgres with a restart when it is not).
scenario_profile() {
    local libs
    libs="$(psql "$ADMIN" -Atc 'SHOW shared_preload_libraries')"
    if [[ "$libs" != *pg_stat_statements* ]]; then
        say "profile: loading pg_stat_statements (ALTER SYSTEM shared_preload_libraries, restart)"
        psql "$ADMIN" -qc "ALTER SYSTEM SET shared_preload_libraries = '${libs:+$libs,}pg_stat_statements'"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main restart \
            || die "could not restart Postgres"
        bash scripts/services.sh
    fi
    start run waitroom_benchrun_profile
    python3 bench/profile.py --url "$URL" --database-url "$(db_url waitroom_benchrun_profile)" \
        --rate 1500 --duration 20 --bin "$BIN" --out "$OUT/profile.md"
    stop_server; drop waitroom_benchrun_profile
}

ALL=(idle moderate sweep closed queues growth notify profile)

# ----------------------------------------------------------------------- main

bash scripts/services.sh
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"

[[ "$(psql "$ADMIN" -Atc 'SHOW track_commit_timestamp')" == "on" ]] \
    || die "track_commit_timestamp is off on the Postgres of DATABASE_URL; set it on and restart it"

cargo build --release --quiet
mkdir -p "$OUT/logs"
(( $# )) || set -- "${ALL[@]}"
for s in "$@"; do
    declare -F "scenario_$s" >/dev/null || die "unknown scenario $s (known: ${ALL[*]})"
done
{
    echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr)"
    echo "postgres: $(psql "$ADMIN" -Atc 'SHOW server_version')"
    echo "rabbitmq: $(rabbitmqctl -q version 2>/dev/null || echo '?')"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "date: $(date -u +%FT%TZ)"
} >"$OUT/machine.txt"
for s in "$@"; do "scenario_$s"; done

# The broker objects of suffix `benchrun` (best effort, local broker, needs rabbitmqctl).
if command -v rabbitmqctl >/dev/null 2>&1 && [[ $EUID -eq 0 ]]; then
    for q in waiting-room-projection-queue waiting-room-projection-dlq; do
        rabbitmqctl -q delete_queue "$q.benchrun" </dev/null >/dev/null 2>&1 || true
    done
    rabbitmqctl -q --no-table-headers list_exchanges name 2>/dev/null | grep '\.benchrun$' | while read -r x; do
        rabbitmqctl -q eval "rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<\"$x\">>), false, <<\"bench\">>)." \
            </dev/null >/dev/null 2>&1 || true
    done || true
fi

bash bench/summary.sh >"$OUT/summary.md"
say "figures in $OUT/summary.md"
# matplotlib for the plot: the system's, else a virtual environment in bench/.venv.
PY=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    if [[ ! -x bench/.venv/bin/python ]] || ! bench/.venv/bin/python -c 'import matplotlib' 2>/dev/null; then
        say "installing matplotlib into bench/.venv"
        python3 -m venv bench/.venv && bench/.venv/bin/pip install -q matplotlib >&2 \
            || say "could not install matplotlib (python3-venv missing?)"
    fi
    PY=bench/.venv/bin/python
fi
if "$PY" bench/plot.py "$OUT" >/dev/null; then
    say "plot in $OUT/lag-vs-load.png"
else
    say "no plot (matplotlib missing)"
fi
