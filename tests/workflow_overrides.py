"""Shrink a shipped API-format workflow for CPU tests without shipping small graphs.

The workflows ship real settings (2048x512 and 50 steps for SyncDiffusion, LDM3D at its native size). Tests run the
same graphs with sizes divided by one factor (so window/stride/tile keep their ratios to the image) and few steps.
"""

from __future__ import annotations

import copy

MAX_TEST_WIDTH = 256
TEST_STEPS = 3
MESH_MAX = (256, 128)  # mesh_width, mesh_height
# input name -> (minimum, multiple) of the scaled value
SCALED = {
    "width": (64, 8),
    "height": (64, 8),
    "window": (64, 8),
    "stride": (8, 8),
    "tile_size": (64, 64),
    "overlap": (8, 8),
    "resolution": (0, 8),
}


def _scale(value: int, factor: int, minimum: int, multiple: int) -> int:
    if value <= 0:
        return value
    return max(minimum, int(round(value / factor / multiple)) * multiple)


def shrink_workflow(prompt: dict, max_width: int = MAX_TEST_WIDTH, steps: int = TEST_STEPS) -> dict:
    """A copy of `prompt` with generated sizes divided by one factor (widest latent -> <= max_width), steps
    capped, SyncDiffusion views halved-overlapping, meshes capped at MESH_MAX. Nodes without size inputs are
    untouched."""
    out = copy.deepcopy(prompt)
    widths = [
        n["inputs"]["width"]
        for n in out.values()
        if n["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage") and isinstance(n["inputs"].get("width"), int)
    ]
    factor = max(1, -(-max(widths, default=0) // max_width))
    for node in out.values():
        inputs = node["inputs"]
        if factor > 1:
            for name, (minimum, multiple) in SCALED.items():
                if isinstance(inputs.get(name), int) and not isinstance(inputs[name], bool):
                    inputs[name] = _scale(inputs[name], factor, minimum, multiple)
        if isinstance(inputs.get("stride"), int) and isinstance(inputs.get("window"), int):
            inputs["stride"] = max(inputs["stride"], inputs["window"] // 2)  # fewer views: CPU time ~ views x steps
        if isinstance(inputs.get("steps"), int):
            inputs["steps"] = min(inputs["steps"], steps)
        if isinstance(inputs.get("sync_steps"), int):
            inputs["sync_steps"] = min(inputs["sync_steps"], steps)
        if isinstance(inputs.get("mesh_width"), int):
            inputs["mesh_width"] = min(inputs["mesh_width"], MESH_MAX[0])
            inputs["mesh_height"] = min(inputs["mesh_height"], MESH_MAX[1])
    return out
