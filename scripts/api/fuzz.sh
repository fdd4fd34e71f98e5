#!/usr/bin/env bash
# Fuzzes the HTTP API against its own OpenAPI document with schemathesis: every check, every
# phase (examples, coverage, fuzzing, stateful via the document's links), a fixed seed, on a
# server of its own, which requires an API token: every request carries it, and the
# `ignored_auth` check verifies that requests without it (or with a wrong one) are refused.
# Any failure fails the script. Prints the number of generated test cases.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/api/venv.sh
source scripts/api/server.sh

SEED="${FUZZ_SEED:-20261127}"
MAX_EXAMPLES="${FUZZ_MAX_EXAMPLES:-100}"
MIN_CASES=1000

bin="$(api_venv)"
api_server_start
log="$(mktemp)"
set +e
"$bin/schemathesis" --config-file scripts/api/schemathesis.toml run "$API_SERVER_URL/openapi.json" \
    --checks all --phases examples,coverage,fuzzing,stateful --mode all \
    --header "Authorization: Bearer $API_SERVER_TOKEN" \
    --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 1 --no-color \
    --generation-database none 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# The summary ends with "Test cases:" and, on the next line, "N generated, …".
cases="$(grep -oE '^ *[0-9]+ generated' "$log" | grep -oE '[0-9]+' | tail -1 || true)"
cases="${cases:-0}"
rm -f "$log"
echo "schemathesis: $cases test cases generated (seed $SEED, max-examples $MAX_EXAMPLES), exit status $status"
if [[ "$status" -ne 0 ]]; then
    echo "schemathesis: failures above" >&2
    exit "$status"
fi
if [[ "$cases" -lt "$MIN_CASES" ]]; then
    echo "schemathesis: only $cases test cases, want at least $MIN_CASES" >&2
    exit 1
fi
