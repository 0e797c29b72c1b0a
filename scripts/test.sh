#!/usr/bin/env bash
# The test command (README, CI): set everything up, check lint and format, then run the whole test suite.
# Extra args go to pytest.
# The browser tests (tests/browser) run when a Chromium is present (SDL3D_CHROMIUM, chromium on PATH or Debian's
# /usr/lib/chromium/chromium); otherwise they are skipped and this script says so.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
source "$ROOT/.cache/env.sh"
cd "$ROOT"
if [ -n "${SDL3D_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
   || [ -x /usr/lib/chromium/chromium ]; then
  echo "[test] browser tests: ON (Chromium found; screenshots under .cache/browser-artifacts/)" >&2
else
  echo "[test] browser tests: SKIPPED (no Chromium; install it with 'apt-get install chromium')" >&2
fi
# Lint and format (Ruff, configured in pyproject.toml) first; the tests run either way, and the exit status is the
# tests' if they failed, else Ruff's.
lint=0
"$SDL3D_PYTHON" -m ruff check --no-cache . || lint=1
"$SDL3D_PYTHON" -m ruff format --check --no-cache . || lint=1
[ "$lint" = 0 ] && echo "[test] ruff: lint and format clean" >&2
tests=0
"$SDL3D_PYTHON" -m pytest tests -q -rs --durations=15 "$@" || tests=$?
if [ "$lint" != 0 ]; then
  echo "[test] Ruff found problems (listed above): fix them, e.g. .venv/bin/ruff check --fix . && .venv/bin/ruff format ." >&2
fi
exit $(( tests != 0 ? tests : lint ))
