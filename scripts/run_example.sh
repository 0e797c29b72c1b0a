#!/usr/bin/env bash
# The main job (README): set everything up, then run the headline workflow headless with the batch runner
# (scripts/run_batch.py) and save its outputs. Without --url it starts ComfyUI here; every run_batch.py option
# works (--offline-fixtures, --url ..., --batch, --set, --output-dir, --resume; see --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
source "$ROOT/.cache/env.sh"
exec "$SDL3D_PYTHON" "$ROOT/scripts/run_batch.py" "$@"
