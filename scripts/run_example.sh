#!/usr/bin/env bash
# The main job (README): set everything up, start ComfyUI headless, run the headline workflow, save outputs.
# Pass --offline-fixtures to run on random-weight fixtures; --workflow, --url, --output-dir as in run_workflow.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
source "$ROOT/.cache/env.sh"
exec "$SDL3D_PYTHON" "$ROOT/scripts/run_workflow.py" "$@"
