#!/usr/bin/env bash
# The fault-injection suite (tests/faults.rs) against a private PostgreSQL cluster and a
# private RabbitMQ node, which it stops and restarts freely: the machine's own services (and
# anything else using them, such as the rest of the test suite) are never touched.
#
#   bash scripts/faults.sh            start both, run the suite, stop both (exit code = the suite's)
#   bash scripts/faults.sh N          the same, N runs in a row (stops at the first failure)
#
# The suite calls back into this script to disturb the services:
#   faults.sh pg-restart | mq-stop | mq-start   (internal)
#
# Needs root (or sudo -n): the cluster runs as `postgres`, the node as `rabbitmq`, as Debian's
# packages set them up. scripts/services.sh installs the packages when they are missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE="${WAITROOM_FAULTS_DIR:-/tmp/waitroom-faults}"
PG_PORT="${WAITROOM_FAULTS_PG_PORT:-55432}"
MQ_PORT="${WAITROOM_FAULTS_MQ_PORT:-56720}"
MQ_DIST_PORT="${WAITROOM_FAULTS_MQ_DIST_PORT:-25680}"
MQ_NODE="waitroom-faults@localhost"

say() { echo "faults.sh: $*" >&2; }
die() { echo "faults.sh: error: $*" >&2; exit 2; }

sudo_=()
if [[ $EUID -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
        || die "needs root or passwordless sudo (the private cluster runs as postgres, the node as rabbitmq)"
    sudo_=(sudo -n)
fi

pg_bin() {
    local v
    v="$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -1)"
    [[ -n "$v" ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    echo "/usr/lib/postgresql/$v/bin"
}

as_postgres() { "${sudo_[@]}" runuser -u postgres -- "$@"; }

pg_ctl_() { as_postgres "$(pg_bin)/pg_ctl" -D "$BASE/pg/data" "$@"; }

pg_start() {
    pg_ctl_ -w -t 60 -l "$BASE/pg/log" \
        -o "-p $PG_PORT -k $BASE/pg -c listen_addresses=127.0.0.1 -c track_commit_timestamp=on -c max_connections=300" \
        start >/dev/null
}

pg_up() {
    "${sudo_[@]}" mkdir -p "$BASE/pg"
    "${sudo_[@]}" chmod 755 "$BASE"
    "${sudo_[@]}" chown postgres:postgres "$BASE/pg"
    if [[ ! -s "$BASE/pg/data/PG_VERSION" ]]; then
        as_postgres "$(pg_bin)/initdb" -D "$BASE/pg/data" -A trust -U postgres >/dev/null
    fi
    pg_ctl_ status >/dev/null 2>&1 || pg_start
    say "postgres: private cluster on 127.0.0.1:$PG_PORT ($BASE/pg)"
}

pg_down() { pg_ctl_ -m fast stop >/dev/null 2>&1 || true; }

mq_env() {
    env RABBITMQ_NODENAME="$MQ_NODE" RABBITMQ_NODE_PORT="$MQ_PORT" RABBITMQ_DIST_PORT="$MQ_DIST_PORT" \
        RABBITMQ_MNESIA_BASE="$BASE/mq/mnesia" RABBITMQ_LOG_BASE="$BASE/mq/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/mq/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$BASE/mq/rabbitmq.conf" RABBITMQ_PID_FILE="$BASE/mq/pid" "$@"
}

mq_ctl() { "${sudo_[@]}" rabbitmqctl -q -n "$MQ_NODE" "$@"; }

# Whether the node answers (fails fast when it is not running, unlike await_startup).
mq_running() { timeout 20 "${sudo_[@]}" rabbitmq-diagnostics -q -n "$MQ_NODE" check_running >/dev/null 2>&1; }

mq_start() {
    "${sudo_[@]}" mkdir -p "$BASE/mq/mnesia" "$BASE/mq/log"
    echo "[]." | "${sudo_[@]}" tee "$BASE/mq/enabled_plugins" >/dev/null
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' "$MQ_PORT" \
        | "${sudo_[@]}" tee "$BASE/mq/rabbitmq.conf" >/dev/null
    "${sudo_[@]}" chown -R rabbitmq:rabbitmq "$BASE/mq"
    local attempt i
    # A node stopped a moment ago may still hold its listener: the new one then fails to
    # boot, so a start that does not come up is tried again.
    for attempt in 1 2 3 4 5; do
        mq_env "${sudo_[@]}" rabbitmq-server -detached >/dev/null 2>&1 || true
        for i in $(seq 1 30); do
            sleep 1
            if mq_running; then return 0; fi
        done
        say "rabbitmq: node $MQ_NODE did not come up (attempt $attempt), starting it again"
    done
    die "rabbitmq node $MQ_NODE did not start (logs in $BASE/mq/log)"
}

# Stops the node and waits until its process has exited.
mq_stop() { mq_ctl stop "$BASE/mq/pid" >/dev/null 2>&1 || true; }

mq_up() {
    mq_running || mq_start
    say "rabbitmq: private node $MQ_NODE on 127.0.0.1:$MQ_PORT ($BASE/mq)"
}

mq_down() { mq_stop; }

case "${1:-}" in
    pg-restart) pg_ctl_ -m fast stop >/dev/null; pg_start; exit 0 ;;
    mq-start) mq_start; exit 0 ;;
    mq-stop) mq_ctl stop "$BASE/mq/pid" >/dev/null; exit 0 ;;
esac
runs="${1:-1}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "usage: scripts/faults.sh [RUNS]"

# The packages, when missing (services.sh installs them; it also checks the machine's services).
bash scripts/services.sh
command -v rabbitmq-server >/dev/null 2>&1 || die "rabbitmq-server not found"

trap 'pg_down; mq_down' EXIT
pg_up
mq_up

export WAITROOM_FAULTS_PG="postgres://postgres@127.0.0.1:$PG_PORT"
export WAITROOM_FAULTS_PG_ADDR="127.0.0.1:$PG_PORT"
export WAITROOM_FAULTS_AMQP="amqp://guest:guest@127.0.0.1:$MQ_PORT/%2f"
export WAITROOM_FAULTS_AMQP_ADDR="127.0.0.1:$MQ_PORT"
self="$(printf '%q' "$PWD/scripts/faults.sh")"
export WAITROOM_FAULTS_PG_RESTART="bash $self pg-restart"
export WAITROOM_FAULTS_MQ_START="bash $self mq-start"
export WAITROOM_FAULTS_MQ_STOP="bash $self mq-stop"
export WAITROOM_FAULTS_MQ_CTL="${sudo_[*]} rabbitmqctl -q -n $MQ_NODE"

for run in $(seq 1 "$runs"); do
    say "run $run of $runs"
    started=$SECONDS
    cargo test --quiet --test faults -- --ignored --nocapture
    say "run $run passed in $((SECONDS - started)) s"
done
