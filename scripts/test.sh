#!/usr/bin/env bash
# The test command (README, CI): set everything up, then run the whole test suite. Extra args go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
source "$ROOT/.cache/env.sh"
cd "$ROOT"
exec "$SDL3D_PYTHON" -m pytest tests -q -rs --durations=15 "$@"
