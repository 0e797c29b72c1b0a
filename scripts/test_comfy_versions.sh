#!/usr/bin/env bash
# The in-process sync and ComfyUI-compatibility tests on each ComfyUI tree given, then one table:
#   scripts/test_comfy_versions.sh COMFYUI_DIR [COMFYUI_DIR ...]
# Environment: SDL3D_PYTHON (interpreter with the tree's requirements; per tree: PYTHON_<n> for the n-th tree, 1-based),
# SDL3D_FIXTURES (model fixtures), TESTS (override the test files). Exit status: 0 when every run passed.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 COMFYUI_DIR [COMFYUI_DIR ...]" >&2; exit 2; }
TESTS="${TESTS:-tests/test_comfy_compat.py tests/test_nodes_sync_gradient_bridge.py tests/test_nodes_sync_refusals.py tests/test_nodes_sync_sampler_input.py tests/test_nodes_sync_flow.py tests/test_nodes_sync_flow_views.py}"
rows=()
status=0
n=0
for dir in "$@"; do
  n=$((n + 1))
  py_var="PYTHON_$n"
  py="${!py_var:-${SDL3D_PYTHON:-python3}}"
  version="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$dir/comfyui_version.py" 2>/dev/null)"
  log="$(mktemp)"
  # shellcheck disable=SC2086  # TESTS is a list of paths
  (cd "$ROOT" && COMFYUI_DIR="$dir" "$py" -m pytest -q -p no:cacheprovider $TESTS) >"$log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  summary="$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|skipped|error)' "$log" | tail -1 | tr -d '=' | xargs)"
  rows+=("| ${version:-?} | $dir | ${summary:-no summary, see $log} |")
  echo "[$version] $summary (log: $log)" >&2
done
echo "| ComfyUI | tree | result |"
echo "|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $status
