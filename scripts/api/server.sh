#!/usr/bin/env bash
# Sourced by the scripts in scripts/api/: starts `waitroom run` on a database and broker names
# of its own (the names the test suite uses, so scripts/test.sh also removes leftovers), waits
# until it is ready, and removes everything again on exit. The server requires the API token
# API_SERVER_TOKEN (a new random one per start) on /api.
set -euo pipefail

api_server_start() {
    local id port
    id="api_$(date +%s)_$$"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    API_SERVER_DB="waitroom_test_${id}"
    API_SERVER_PG="${WAITROOM_TEST_PG:-postgres://postgres@127.0.0.1:5432}"
    API_SERVER_SUFFIX="test_${id}"
    API_SERVER_URL="http://127.0.0.1:${port}"
    API_SERVER_LOG="$(mktemp)"
    API_SERVER_TOKEN="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    cargo build --quiet --bin waitroom
    DATABASE_URL="${API_SERVER_PG}/${API_SERVER_DB}" \
        AMQP_URL="${WAITROOM_TEST_AMQP:-amqp://guest:guest@127.0.0.1:5672/%2f}" \
        BROKER_SUFFIX="$API_SERVER_SUFFIX" HTTP_ADDR="127.0.0.1:${port}" CONSOLE_ADDR=off \
        API_TOKEN="$API_SERVER_TOKEN" API_TOKENS_FILE= LOG_FORMAT=json RUST_LOG=warn \
        target/debug/waitroom run >"$API_SERVER_LOG" 2>&1 &
    API_SERVER_PID=$!
    trap api_server_stop EXIT
    for _ in $(seq 1 120); do
        if curl -fsS "$API_SERVER_URL/health/ready" >/dev/null 2>&1; then
            echo "api server: $API_SERVER_URL (database $API_SERVER_DB, broker suffix $API_SERVER_SUFFIX)" >&2
            return 0
        fi
        if ! kill -0 "$API_SERVER_PID" 2>/dev/null; then
            cat "$API_SERVER_LOG" >&2
            echo "api server: exited before it was ready" >&2
            return 1
        fi
        sleep 0.5
    done
    cat "$API_SERVER_LOG" >&2
    echo "api server: not ready within 60 s" >&2
    return 1
}

api_server_stop() {
    if [[ -n "${API_SERVER_PID:-}" ]] && kill -0 "$API_SERVER_PID" 2>/dev/null; then
        kill -TERM "$API_SERVER_PID" 2>/dev/null || true
        wait "$API_SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n "${API_SERVER_DB:-}" ]] && command -v psql >/dev/null 2>&1; then
        psql "${API_SERVER_PG}/postgres" -qc "DROP DATABASE IF EXISTS \"${API_SERVER_DB}\" WITH (FORCE)" \
            >/dev/null 2>&1 || true
    fi
    if [[ -n "${API_SERVER_SUFFIX:-}" && $EUID -eq 0 ]] && command -v rabbitmqctl >/dev/null 2>&1; then
        local q
        for q in waiting-room-projection-queue waiting-room-projection-dlq; do
            rabbitmqctl -q delete_queue "$q.$API_SERVER_SUFFIX" </dev/null >/dev/null 2>&1 || true
        done
    fi
    rm -f "${API_SERVER_LOG:-}"
}
