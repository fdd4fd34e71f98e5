#!/usr/bin/env bash
# Generates the Python client from openapi/waitroom.json with openapi-python-client (pinned, in
# the venv of scripts/api/venv.sh) and runs the clinic flow (scripts/api/python_flow.py) with it
# against a server of its own, which requires an API token (the client's AuthenticatedClient).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source scripts/api/venv.sh
source scripts/api/server.sh

bin="$(api_venv)"
out="target/api-python-client"
rm -rf "$out"
"$bin/openapi-python-client" generate --path openapi/waitroom.json \
    --config scripts/api/python-client.yaml --output-path "$out/waitroom_client" --meta none --overwrite
api_server_start
PYTHONPATH="$out" "$bin/python" scripts/api/python_flow.py "$API_SERVER_URL" "$API_SERVER_TOKEN"
