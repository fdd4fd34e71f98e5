#!/usr/bin/env bash
# Start local services if needed, then run waitroom (release build).
# Arguments go to the binary; with none it runs `waitroom run` (API + relay + projector).
#   scripts/run.sh                 # waitroom run
#   scripts/run.sh rebuild         # waitroom rebuild
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/services.sh
exec cargo run --release -- "${@:-run}"
