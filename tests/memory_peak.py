"""Peak memory of one Stereo 360 or Save 360 Depth Mesh call, measured in a fresh process (for
tests/test_memory_estimates.py, which compares it with the node's own estimate).

    python tests/memory_peak.py stereo|mesh WIDTH HEIGHT [input=value ...]

Prints one JSON line: {"peak_bytes", "estimate_bytes", "seconds"}. The peak is the rise of the process's resident
high-water mark (VmHWM, reset through /proc/self/clear_refs once the inputs exist) over its resident set just
before the call: torch's and numpy's allocations both count (tracemalloc sees neither). Linux only.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

STEREO = dict(
    ipd_m=0.064,
    depth_mode="inverse",
    near_m=1.0,
    far_m=20.0,
    invert_depth=False,
    metric_scale_m=10.0,
    sphere_radius_m=6.0,
    displacement_m=4.0,
    convergence_m=0.0,
    pole_fade_from_deg=60.0,
    pole_fade_to_deg=75.0,
    horizontal_only=False,
    warp="forward",
    fill="background",
    crack_px=2,
    edge_ratio_tau=0.05,
    supersample=1,
    layout="top_bottom",
    swap_eyes=False,
)
MESH = dict(
    format="glb",
    mesh_width=8192,
    mesh_height=4096,
    depth_mode="sphere_displace",
    near_m=1.0,
    far_m=20.0,
    invert_depth=False,
    metric_scale_m=10.0,
    sphere_radius_m=6.0,
    displacement_m=4.0,
    cull_edges=False,
    edge_ratio_tau=0.2,
    filename_prefix="memory/mesh",
)


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _inputs(width: int, height: int):
    """An equirect with texture and a depth map with near objects (their edges open holes in the eyes)."""
    import torch

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, height, width, 3, generator=g)
    x = torch.linspace(0, 12.0, width)
    depth = (0.3 + 0.1 * torch.sin(x))[None, :].repeat(height, 1)
    for k in range(8):  # near boxes
        x0, y0 = (k * width) // 8 + width // 32, height // 3 + (k % 3) * height // 12
        depth[y0 : y0 + height // 6, x0 : x0 + width // 20] = 0.9
    return image, depth[None]


def _coerce(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main(argv: list[str]) -> dict:
    kind, width, height = argv[0], int(argv[1]), int(argv[2])
    settings = {**(STEREO if kind == "stereo" else MESH)}
    settings.update({k: _coerce(v) for k, v in (a.split("=", 1) for a in argv[3:])})
    os.environ.setdefault("SDL3D_MEMORY_LIMIT_MB", str(10**7))  # the guard must not refuse what we measure
    import torch

    import comfy_inprocess

    comfy_dir = Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache" / "ComfyUI"))
    pack = comfy_inprocess.load_pack(comfy_dir, cpu=True)
    import folder_paths

    output = tempfile.mkdtemp(prefix="sdl3d_memory_")
    folder_paths.set_output_directory(output)
    guards = sys.modules[comfy_inprocess.PACK_MODULE + ".nodes.shared.memory_guards"]
    classes = {cls.define_schema().node_id: cls for cls in comfy_inprocess.pack_node_classes(pack)}
    image, depth = _inputs(width, height)
    if kind == "stereo":
        node = classes["SDL3D_Stereo360"]
        estimate = guards.stereo_memory(width, height, 1, settings["warp"], settings["supersample"])
    else:
        node = classes["SDL3D_SaveDepthMesh"]
        mesh_size = (settings["mesh_width"], settings["mesh_height"])
        estimate = guards.mesh_memory(*mesh_size, width, height, settings["cull_edges"])
    node.VALIDATE_CLASS()
    clone = node.PREPARE_CLASS_CLONE({})
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _kib("VmRSS")
    started = time.monotonic()
    with torch.inference_mode():
        result = clone.execute(image=image, depth=depth, **settings)
    seconds = time.monotonic() - started
    peak = _kib("VmHWM") - before
    del result
    shutil.rmtree(output, ignore_errors=True)
    return {"peak_bytes": peak, "estimate_bytes": int(estimate), "seconds": round(seconds, 1)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
