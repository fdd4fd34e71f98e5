#!/usr/bin/env bash
# Measures end-to-end lag (event created -> projected, Postgres clock) of the release build
# on this machine, in two regimes, and prints lag_statistics for each:
#   idle:  N sequential check-ins, 20 ms apart, over 20 queues: every event finds the relay
#          asleep on LISTEN and is woken by NOTIFY (the path a quiet clinic sees);
#   burst: M check-ins from 8 concurrent clients over 20 queues (the relay drains without
#          notifications).
# Uses its own database and broker names and removes them afterwards.
# Usage: scripts/measure-lag.sh [N=300] [M=2000]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${1:-300}"
M="${2:-2000}"
bash scripts/services.sh
cargo build --release -q

PG="postgres://postgres@127.0.0.1:5432"
DB="waitroom_measure_$$"
PORT=5077
export DATABASE_URL="$PG/$DB" BROKER_SUFFIX="measure_$$" HTTP_ADDR="127.0.0.1:$PORT" RUST_LOG=warn LOG_FORMAT=json
./target/release/waitroom run 2>/tmp/waitroom-measure.log &
PID=$!
cleanup() {
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    if command -v rabbitmqctl >/dev/null 2>&1; then
        for q in "waiting-room-projection-queue.$BROKER_SUFFIX" "waiting-room-projection-dlq.$BROKER_SUFFIX"; do
            rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT
API="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -sf "$API/health" >/dev/null && break; sleep 0.1; done

stats() {
    psql "$DATABASE_URL" -c "SELECT coalesce(event_type, '(all)') AS event_type, event_count,
        round(min_ms::numeric, 2) AS min_ms, round(p50_ms::numeric, 2) AS p50_ms,
        round(p95_ms::numeric, 2) AS p95_ms, round(p99_ms::numeric, 2) AS p99_ms,
        round(max_ms::numeric, 2) AS max_ms
        FROM lag_statistics(interval '1 hour') WHERE event_type IS NULL"
}
wait_processed() {
    for _ in $(seq 600); do
        [ "$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM event_processing_lag WHERE status <> 'PROCESSED'")" = 0 ] && return
        sleep 0.1
    done
    echo "events still unprocessed after 60 s" >&2; exit 1
}
reset() { psql "$DATABASE_URL" -qc "DELETE FROM event_processing_lag" ; }

for q in $(seq 0 19); do
    curl -sf -XPOST "$API/api/queues" -H 'content-type: application/json' \
        -d "{\"queueId\":\"q$q\",\"name\":\"Queue $q\",\"maxCapacity\":10000}" >/dev/null
done
wait_processed; reset

echo "== idle: $N sequential check-ins, 20 ms apart (each woken by NOTIFY)"
for i in $(seq "$N"); do
    curl -sf -XPOST "$API/api/queues/q$((i % 20))/check-ins" -H 'content-type: application/json' \
        -d "{\"patientId\":\"i$i\",\"patientName\":\"P $i\",\"priority\":\"Medium\",\"consultationType\":\"General\"}" >/dev/null
    sleep 0.02
done
wait_processed; stats; reset

echo "== burst: $M check-ins from 8 concurrent clients"
start=$(date +%s.%N)
seq "$M" | awk '{print $1, $1 % 20}' | xargs -P 8 -n 2 sh -c \
    'curl -sf -o /dev/null -XPOST "$0/api/queues/q$2/check-ins" -H "content-type: application/json" \
        -d "{\"patientId\":\"b$1\",\"patientName\":\"P $1\",\"priority\":\"High\",\"consultationType\":\"General\"}"' "$API"
wait_processed
end=$(date +%s.%N)
stats
echo "burst wall time: $(echo "$end - $start" | bc) s for $M commands"
