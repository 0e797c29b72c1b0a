"""Run presets: a shipped workflow at its real settings, or shrunk so a CPU finishes it in minutes.

The workflows ship real settings (the headline graph: 1024x512, window 512, 50 steps, 10 sync steps, LPIPS on
512 px windows), which take hours on a CPU. `shrink` divides every generated size by one factor (window, stride,
tiles and overlaps keep their ratios to the image), halves the overlap of SyncDiffusion views (CPU time grows with
views x steps) and caps steps, sync steps, the LPIPS resolution and the mesh size. The runner's CPU preset and the
tests' smaller shrink (tests/workflow_overrides.py) are both this function.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

LATENT_SOURCES = ("EmptyLatentImage", "EmptySD3LatentImage", "SDL3D_SphereKSampler")  # nodes whose width is generated
SPHERE_SAMPLER = "SDL3D_SphereKSampler"
# input name -> (minimum, multiple) of the scaled value
SCALED = {
    "width": (64, 8),
    "height": (64, 8),
    "window": (64, 8),
    "stride": (8, 8),
    "tile_size": (64, 64),
    "overlap": (8, 8),
    "resolution": (0, 8),
    "view_size": (64, 8),
}
# How an input is named in the preset's one-line summary, where its name alone would be unclear.
LABELS = {("SDL3D_LPIPSLoader", "resolution"): "LPIPS resolution"}


@dataclass(frozen=True)
class Shrink:
    """How far to shrink: the widest generated image (pixels), step caps, an LPIPS resolution cap (None: scaled
    with the image only) and the mesh size cap (width, height)."""

    max_width: int
    steps: int
    sync_steps: int
    lpips_resolution: int | None = None
    mesh_max: tuple[int, int] = (256, 128)


# The CPU preset (README, "The two commands"): about a minute of sampling on a 2-core CPU for the headline graph.
CPU_PRESET = Shrink(max_width=512, steps=12, sync_steps=3, lpips_resolution=128, mesh_max=(512, 256))


def _scale(value: int, factor: int, minimum: int, multiple: int) -> int:
    if value <= 0:
        return value
    return max(minimum, int(round(value / factor / multiple)) * multiple)


def shrink(prompt: dict, spec: Shrink) -> tuple[dict, list[str]]:
    """A shrunk copy of an API-format `prompt` and what changed ("steps 50->12", one entry per input name and
    distinct change). Nodes without size, step or mesh inputs are untouched; so is `prompt`."""
    out = copy.deepcopy(prompt)
    widths = [
        n["inputs"]["width"]
        for n in out.values()
        if n["class_type"] in LATENT_SOURCES and isinstance(n["inputs"].get("width"), int)
    ]
    factor = max(1, -(-max(widths, default=0) // spec.max_width))
    for node in out.values():
        inputs = node["inputs"]
        ints = {k for k, v in inputs.items() if isinstance(v, int) and not isinstance(v, bool)}
        if factor > 1:
            for name in ints & SCALED.keys():
                inputs[name] = _scale(inputs[name], factor, *SCALED[name])
            if node["class_type"] == SPHERE_SAMPLER and inputs.get("width", 0) > 0:
                inputs["width"] = max(64, inputs["width"] // 16 * 16)  # its canvas needs a multiple of 16
        if {"stride", "window"} <= ints:
            inputs["stride"] = max(inputs["stride"], inputs["window"] // 2)
        if "steps" in ints:
            inputs["steps"] = min(inputs["steps"], spec.steps)
        if "sync_steps" in ints:
            inputs["sync_steps"] = min(inputs["sync_steps"], spec.sync_steps, spec.steps)
        if spec.lpips_resolution and node["class_type"] == "SDL3D_LPIPSLoader" and "resolution" in ints:
            current = inputs["resolution"]
            inputs["resolution"] = spec.lpips_resolution if current <= 0 else min(current, spec.lpips_resolution)
        if {"mesh_width", "mesh_height"} <= ints:
            inputs["mesh_width"] = min(inputs["mesh_width"], spec.mesh_max[0])
            inputs["mesh_height"] = min(inputs["mesh_height"], spec.mesh_max[1])
    changes = {
        f"{LABELS.get((node['class_type'], name), name)} {before}->{node['inputs'][name]}": None
        for node_id, node in out.items()
        for name, before in prompt[node_id]["inputs"].items()
        if node["inputs"][name] != before
    }
    return out, list(changes)
