#!/usr/bin/env bash
# Sourced by the scripts in scripts/api/: a Python virtual environment under target/ with the
# pinned API tools, created or completed when something is missing. Prints its bin directory.
set -euo pipefail

SCHEMATHESIS_VERSION="4.32.5"
OPENAPI_PYTHON_CLIENT_VERSION="0.29.1"
# What the generated client imports besides httpx and attrs (which the generator brings).
PYTHON_DATEUTIL_VERSION="2.9.0.post0"
API_VENV="${API_VENV:-target/api-venv}"

api_venv() {
    local want="$API_VENV/.installed-st${SCHEMATHESIS_VERSION}-opc${OPENAPI_PYTHON_CLIENT_VERSION}-du${PYTHON_DATEUTIL_VERSION}"
    if [[ ! -f "$want" ]]; then
        echo "api tools: installing schemathesis $SCHEMATHESIS_VERSION and openapi-python-client $OPENAPI_PYTHON_CLIENT_VERSION into $API_VENV" >&2
        python3 -m venv "$API_VENV"
        "$API_VENV/bin/pip" install --quiet --disable-pip-version-check \
            "schemathesis==$SCHEMATHESIS_VERSION" \
            "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" \
            "python-dateutil==$PYTHON_DATEUTIL_VERSION" >&2
        touch "$want"
    fi
    echo "$API_VENV/bin"
}
