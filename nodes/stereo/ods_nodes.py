"""Stereo 360 node: ODS synthesis of left/right equirect eyes from RGB + depth (packing, saving: stereo_output_nodes).

Thin adapters over ``ldm3d_core.distance`` / ``ods`` / ``ods_warp`` / ``layouts``. IMAGE is [B,H,W,3] in [0,1];
depth is a MASK [B,H,W] in [0,1], white = near (LDM3D / MiDaS convention), or an IMAGE whose channel mean is
used. A depth batch of 1 is shared by every image of the batch.
"""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from ...ldm3d_core import distance, layouts, ods, ods_warp
from ..shared import memory_guards, validation
from ..shared.common import CATEGORY_STEREO, depth_inputs, equirect_depth, equirect_depth_inputs, input_error, node_name
from .inputs import eye_outputs, ipd_input, layout_input


def _compute_device():
    """(compute device, output device) from ComfyUI's model management."""
    import comfy.model_management as mm

    dev = mm.get_torch_device()
    # int64 scatter_reduce(amin) is CPU/CUDA-only in torch; other backends warp on the CPU
    return (dev if dev.type in ("cpu", "cuda") else torch.device("cpu")), mm.intermediate_device()


def _require_memory(node: str, image, warp: str, supersample: int, dev, out_dev) -> None:
    """Refuse before allocating (``memory_guards.stereo_memory``): all of it on one device; else the outputs on
    ``out_dev`` and one eye's warp on ``dev``."""
    batch, height, width = image.shape[:3]
    total = memory_guards.stereo_memory(width, height, batch, warp, supersample)
    half = memory_guards.stereo_memory(width // 2, height // 2, batch, warp, 1)
    fix = f"use a smaller image or batch ({width // 2}x{height // 2} needs about {memory_guards.format_bytes(half)})"
    if warp == "forward" and supersample == 2:
        fix += ", or supersample 1"
    if dev == out_dev:
        checks = [(total, dev)]
    else:
        outputs = memory_guards.STEREO_OUTPUT_BYTES_PER_PIXEL * batch * width * height
        checks = [(outputs, out_dev), (total - outputs, dev)]
    for estimate, device in checks:
        memory_guards.require_memory(node, "image", image, estimate, fix, device=device)


def _require_pole_fade(node: str, fade_from: float, fade_to: float) -> None:
    if fade_to < fade_from:
        raise input_error(
            node,
            "pole_fade_to_deg",
            fade_to,
            f"is below pole_fade_from_deg = {fade_from}",
            "make it >= pole_fade_from_deg",
        )


class Stereo360(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_Stereo360",
            display_name="Stereo 360 from RGB + Depth (ODS)",
            category=CATEGORY_STEREO,
            description="Omni-directional stereo (ODS) for VR from one equirectangular image and its depth: exact "
            "per-row geometry (asin, not a constant shift), z-buffered forward warp, seam-aware, pole "
            "fade, hole masks per eye for inpainting, top-bottom / side-by-side / anaglyph packing.",
            inputs=[
                *equirect_depth_inputs("Equirectangular RGB panorama, 2:1 (e.g. 1024x512)."),
                ipd_input("Interpupillary distance in metres (64 mm is average); 0 = no stereo."),
                *depth_inputs(),
                io.Float.Input(
                    "convergence_m",
                    default=0.0,
                    min=0.0,
                    max=100000.0,
                    step=0.1,
                    tooltip="Zero-parallax distance in metres; 0 = infinity (parallel eyes, right for VR "
                    "headsets). Use a finite value only for anaglyph or flat-screen previews.",
                ),
                io.Float.Input(
                    "pole_fade_from_deg",
                    default=60.0,
                    min=0.0,
                    max=90.0,
                    step=0.5,
                    tooltip="Elevation where the stereo baseline starts fading toward the poles.",
                ),
                io.Float.Input(
                    "pole_fade_to_deg",
                    default=75.0,
                    min=0.0,
                    max=90.0,
                    step=0.5,
                    tooltip="Elevation from which there is no stereo (poles untouched). 90/90 = no fade.",
                ),
                io.Boolean.Input(
                    "horizontal_only",
                    default=False,
                    tooltip="Keep every pixel in its row (skip the small vertical ODS correction).",
                ),
                io.Combo.Input(
                    "warp",
                    options=list(ods_warp.WARP_MODES),
                    default="forward",
                    tooltip="forward: z-buffered splat with hole masks (reference quality). backward: fast "
                    "preview, no holes, approximate occlusions.",
                ),
                io.Combo.Input(
                    "fill",
                    options=list(ods_warp.FILL_MODES),
                    default="background",
                    tooltip="How disocclusion holes are filled: background = copy the farther neighbour, "
                    "stretch = interpolate, none = leave black. The hole masks mark them either "
                    "way.",
                ),
                io.Int.Input(
                    "crack_px",
                    default=2,
                    min=0,
                    max=16,
                    tooltip="Hole runs up to this width between similar depths are cracks: interpolated "
                    "and not marked in the hole mask.",
                ),
                io.Float.Input(
                    "edge_ratio_tau",
                    default=0.05,
                    min=0.0,
                    max=10.0,
                    step=0.01,
                    tooltip="Relative depth difference below which the two sides of a hole count as the "
                    "same surface (crack).",
                ),
                io.Int.Input(
                    "supersample",
                    default=1,
                    min=1,
                    max=2,
                    tooltip="2 = warp at twice the resolution and average down (smoother edges, 4x work).",
                ),
                layout_input(
                    "Packing of the 'stereo' output: top_bottom (left eye on top, _360_TB), "
                    "side_by_side (left eye left, _360_LR) or red-cyan anaglyph."
                ),
                io.Boolean.Input(
                    "swap_eyes",
                    default=False,
                    tooltip="Exchange the eyes in 'stereo' and 'anaglyph' (cross-eyed viewing).",
                ),
            ],
            outputs=[
                *eye_outputs("Left-eye equirect.", "Right-eye equirect."),
                io.Mask.Output(
                    "left_hole",
                    display_name="left_hole",
                    tooltip="1 where the left eye saw nothing (filled disocclusions): inpaint these.",
                ),
                io.Mask.Output(
                    "right_hole",
                    display_name="right_hole",
                    tooltip="1 where the right eye saw nothing (filled disocclusions).",
                ),
                io.Image.Output(
                    "anaglyph", display_name="anaglyph", tooltip="Red-cyan anaglyph (red = left eye) for a quick check."
                ),
                io.Image.Output(
                    "disparity",
                    display_name="disparity",
                    tooltip="Binocular disparity per source pixel, 0.5 + 0.5 * d / max|d| "
                    "(mid grey = zero parallax, white = nearest).",
                ),
            ],
        )

    @classmethod
    def input_rules(cls, node, values):
        yield validation.depth_problem(node, values)
        fade_from, fade_to = values["pole_fade_from_deg"], values["pole_fade_to_deg"]
        if None not in (fade_from, fade_to):
            yield validation.problem_of(_require_pole_fade, node, fade_from, fade_to)

    @classmethod
    def execute(
        cls,
        image,
        depth,
        ipd_m,
        convergence_m,
        pole_fade_from_deg,
        pole_fade_to_deg,
        horizontal_only,
        warp,
        fill,
        crack_px,
        edge_ratio_tau,
        supersample,
        layout,
        swap_eyes,
        **depth_widgets,
    ) -> io.NodeOutput:
        node = node_name(cls)
        d, mapping = equirect_depth(node, image, depth, **depth_widgets)
        if not (math.isfinite(ipd_m) and ipd_m >= 0):
            raise input_error(
                node,
                "ipd_m",
                ipd_m,
                "must be a distance >= 0 in metres",
                "use 0.064 (average adult); to swap eyes use swap_eyes",
            )
        _require_pole_fade(node, pole_fade_from_deg, pole_fade_to_deg)
        if supersample not in (1, 2):
            raise input_error(node, "supersample", supersample, "must be 1 or 2", "use 1 or 2")
        geom = ods.ODSGeometry(
            ipd=float(ipd_m),
            convergence=math.inf if convergence_m <= 0 else float(convergence_m),
            pole_from_deg=float(pole_fade_from_deg),
            pole_to_deg=float(pole_fade_to_deg),
            horizontal_only=bool(horizontal_only),
        )
        dev, out_dev = _compute_device()
        import comfy.utils

        batch, height, width = image.shape[:3]
        _require_memory(node, image, warp, int(supersample), dev, out_dev)
        pbar = comfy.utils.ProgressBar(2 * batch)
        # outputs filled in place, one eye at a time (no per-eye lists stacked at the end: the peak is
        # memory_guards.stereo_memory)
        eyes = [torch.empty(batch, height, width, 3, device=out_dev, dtype=torch.float32) for _ in range(2)]
        holes = [torch.empty(batch, height, width, device=out_dev, dtype=torch.float32) for _ in range(2)]
        disp = torch.empty(batch, height, width, 3, device=out_dev, dtype=torch.float32)
        for i in range(batch):
            r = distance.depth_to_distance(d[i].to(dev), mapping)
            img = image[i, ..., :3].to(dev, torch.float32)
            for k, eye in enumerate(("left", "right")):
                result = ods_warp.render_eye(
                    img,
                    r,
                    eye,
                    geom,
                    warp=warp,
                    fill=fill,
                    crack_px=int(crack_px),
                    tau=float(edge_ratio_tau),
                    supersample=int(supersample),
                )
                eyes[k][i] = result.image.clamp_(0, 1)
                holes[k][i] = result.hole
                del result
                pbar.update(1)
            disp[i] = ods.disparity_preview(r, geom)[..., None]
            del r, img
        left, right = eyes
        stereo = layouts.pack_stereo(left, right, layout, swap_eyes)
        ana = layouts.pack_stereo(left, right, "anaglyph", swap_eyes)
        return io.NodeOutput(stereo, left, right, holes[0], holes[1], ana, disp)


STEREO_NODES = [Stereo360]
