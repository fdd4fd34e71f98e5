#!/usr/bin/env bash
# bench/panels.py with matplotlib: the system's, else a virtual environment in bench/.venv
# (the same one bench/run.sh uses for bench/plot.py). Arguments go to bench/panels.py.
#   bench/panels.sh bench/results/sweep-*.json -o bench/results/panels.png
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    if [[ ! -x bench/.venv/bin/python ]] || ! bench/.venv/bin/python -c 'import matplotlib' 2>/dev/null; then
        echo "panels.sh: installing matplotlib into bench/.venv" >&2
        python3 -m venv bench/.venv && bench/.venv/bin/pip install -q matplotlib >&2
    fi
    PY=bench/.venv/bin/python
fi
exec "$PY" bench/panels.py "$@"
