#!/usr/bin/env bash
# Full check: services up, leftovers from earlier test runs removed, then fmt, clippy, the
# alert rules and their unit tests, the test suite, the dashboards against a real /metrics
# scrape, the compose file and the Kubernetes manifests (scripts/ops-checks.sh; each step
# installs what it needs). Extra arguments go to `cargo test` (e.g. scripts/test.sh store::
# -- --nocapture).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { echo "==> $*" >&2; }
warn() { echo "test.sh: warning: $*" >&2; }

step "services"
bash scripts/services.sh

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/waitroom}"
AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"

# Same server and user as DATABASE_URL, but the `postgres` maintenance database
# (the waitroom database itself may not exist yet). Query parameters are kept.
admin_db_url() {
    local url="$1" base query="" authority
    base="${url%%\?*}"
    if [[ "$url" == *\?* ]]; then query="?${url#*\?}"; fi
    authority="${base#*://}"; authority="${authority%%/*}"
    echo "${base%%://*}://${authority}/postgres${query}"
}

# Each test creates its own database named waitroom_test_<something> and drops it at the end;
# a crashed or killed run leaves some behind. Drop them all (FORCE ends stray sessions).
drop_test_databases() {
    local admin stmts
    command -v psql >/dev/null 2>&1 || { warn "psql not found, leftover test databases not dropped"; return 0; }
    # The tests' server: WAITROOM_TEST_PG (a URL without database), else DATABASE_URL's.
    if [[ -n "${WAITROOM_TEST_PG:-}" ]]; then admin="${WAITROOM_TEST_PG%/}/postgres"
    else admin="$(admin_db_url "$DATABASE_URL")"; fi
    stmts="$(psql "$admin" -Atc "SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE);', datname)
                               FROM pg_database WHERE datname LIKE 'waitroom\_test\_%'")" \
        || { warn "could not list test databases"; return 0; }
    [[ -n "$stmts" ]] || return 0
    echo "test.sh: dropping $(wc -l <<<"$stmts") leftover test database(s)" >&2
    # One statement per line: psql runs each in autocommit (DROP DATABASE refuses a transaction).
    psql "$admin" -q -v ON_ERROR_STOP=1 <<<"$stmts" || warn "dropping test databases failed"
}

# Tests name their broker objects <name>.test_<id>; delete leftovers from killed runs.
# rabbitmqctl has no delete_exchange (rabbitmqadmin needs the management plugin), so
# exchanges are deleted through `rabbitmqctl eval`. Everything here is best effort.
delete_test_broker_objects() {
    local rest host vhost ctl=() names q quoted=""
    rest="${WAITROOM_TEST_AMQP:-$AMQP_URL}"             # the tests' broker
    rest="${rest#*://}"; rest="${rest##*@}"
    if [[ "$rest" == \[* ]]; then host="${rest%%\]*}]"; else host="${rest%%[:/?]*}"; fi
    case "$host" in 127.0.0.1|localhost|\[::1\]) ;; *) return 0 ;; esac   # local broker only
    command -v rabbitmqctl >/dev/null 2>&1 || { warn "rabbitmqctl not found, broker leftovers not deleted"; return 0; }
    if [[ $EUID -eq 0 ]]; then ctl=(rabbitmqctl)
    elif command -v sudo >/dev/null 2>&1; then ctl=(sudo -n rabbitmqctl)
    else warn "not root: broker leftovers not deleted"; return 0; fi

    vhost="/"
    if [[ "$rest" == */* ]]; then
        vhost="${rest#*/}"; vhost="${vhost%%\?*}"
        vhost="${vhost//%2[fF]//}"          # %2f -> /
        [[ -n "$vhost" ]] || vhost="/"
    fi

    names="$("${ctl[@]}" -q --no-table-headers list_queues -p "$vhost" name 2>/dev/null)" \
        || { warn "rabbitmqctl list_queues failed"; return 0; }
    while IFS= read -r q; do
        [[ "$q" == *.test_* ]] || continue
        # </dev/null: rabbitmqctl would otherwise swallow the rest of the loop's input.
        "${ctl[@]}" -q delete_queue -p "$vhost" "$q" </dev/null >/dev/null 2>&1 || warn "could not delete queue $q"
    done <<<"$names"

    names="$("${ctl[@]}" -q --no-table-headers list_exchanges -p "$vhost" name 2>/dev/null)" \
        || { warn "rabbitmqctl list_exchanges failed"; return 0; }
    while IFS= read -r q; do
        # Only plain names, so they can be quoted into an Erlang binary safely.
        [[ "$q" == *.test_* && "$q" =~ ^[A-Za-z0-9._:-]+$ ]] || continue
        quoted+="${quoted:+, }<<\"$q\">>"
    done <<<"$names"
    if [[ -n "$quoted" ]]; then
        "${ctl[@]}" -q eval "[rabbit_exchange:delete(rabbit_misc:r(<<\"$vhost\">>, exchange, N), false, <<\"waitroom-test-cleanup\">>) || N <- [$quoted]]." \
            >/dev/null 2>&1 || warn "could not delete test exchanges"
    fi
}

# The board's browser test (tests/pipeline/board_browser.rs) drives headless Chromium through
# chromedriver: install both from the distribution when missing. The test is then required
# (WAITROOM_BROWSER_TESTS=require): without a browser it fails instead of skipping.
ensure_browser() {
    local sudo=() apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then return 0; fi
    command -v apt-get >/dev/null 2>&1 || { warn "apt-get not found: install chromium and chromedriver yourself"; return 0; }
    if [[ $EUID -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { warn "not root and no sudo: chromium not installed"; return 0; }
        sudo=(sudo -n)
    fi
    echo "test.sh: installing chromium and chromium-driver" >&2
    "${sudo[@]}" "${apt[@]}" install chromium chromium-driver \
        || { "${sudo[@]}" "${apt[@]}" update && "${sudo[@]}" "${apt[@]}" install chromium chromium-driver; } \
        || warn "installing chromium failed"
}

step "browser for the board test (chromium, chromedriver)"
ensure_browser
export WAITROOM_BROWSER_TESTS=require

step "cleaning leftovers of earlier test runs"
drop_test_databases
delete_test_broker_objects

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The API against its OpenAPI document (issue 6): the generated clients run the clinic flow,
# and schemathesis fuzzes a server of its own. Skipped when arguments select some tests only.
if [[ $# -eq 0 ]]; then
    step "API: generated Rust client (progenitor) runs the clinic flow"
    cargo build --quiet --bin waitroom      # the flow test runs this binary
    cargo clippy -p waitroom-client --all-targets -- -D warnings
    cargo test -p waitroom-client -- --nocapture
    step "API: generated Python client (openapi-python-client) runs the clinic flow"
    bash scripts/api/python-client.sh
    step "API: schemathesis, all checks and phases"
    bash scripts/api/fuzz.sh
fi

step "alert rules: promtool check rules, promtool test rules"
bash scripts/ops-checks.sh rules

# The `metrics` integration test pipes a real scrape through `promtool check metrics` (it
# must not skip that here) and leaves the scrape for the dashboards step.
export WAITROOM_REQUIRE_PROMTOOL=1
export WAITROOM_METRICS_DUMP="$PWD/target/ops/metrics-scrape.txt"
rm -f "$WAITROOM_METRICS_DUMP"

step "cargo test $*"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

failed=()
step "dashboards and alert rules name exported metrics"
if [[ ! -s "$WAITROOM_METRICS_DUMP" ]]; then
    # A filtered run (scripts/test.sh store::) did not scrape; take one now.
    cargo test --test pipeline metrics_after_traffic -q >/dev/null 2>&1 || true
fi
bash scripts/ops-checks.sh dashboards "$WAITROOM_METRICS_DUMP" || failed+=(dashboards)

step "docker-compose config"
bash scripts/ops-checks.sh compose || failed+=(compose)

step "kubernetes manifests"
bash scripts/ops-checks.sh kubernetes || failed+=(kubernetes)

# The fault-injection suite (tests/faults.rs) restarts its Postgres and RabbitMQ, so it runs
# last, alone, against a private cluster and node (scripts/faults.sh), FAULT_RUNS times in a
# row (default 3). Skipped when arguments select some tests only.
if [[ $# -eq 0 ]]; then
    step "fault-injection suite, ${FAULT_RUNS:-3} runs in a row (scripts/faults.sh)"
    bash scripts/faults.sh "${FAULT_RUNS:-3}" 2>&1 | tee -a "$log" || failed+=(faults)
fi

((${#failed[@]} == 0)) || echo "test.sh: failed: ${failed[*]}" >&2
# One closing line over every test binary (unit, integration): "tests: N passed, N failed".
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
((status == 0 && ${#failed[@]} == 0)) || exit 1
