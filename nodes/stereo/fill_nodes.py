"""Stereo 360 disocclusion filling: the hole mask in the source view (to inpaint once) and the stereo pair whose holes
show that one inpainted background layer in both eyes. Thin adapters over ``ldm3d_core.ods_fill``.

IMAGE [B,H,W,3] in [0,1]; depth as in the Stereo 360 node (MASK, white = near, or IMAGE); MASK [B,H,W], 1 = inpaint.
Both nodes use the same geometry widgets (ipd and depth mapping; no convergence, default pole fade), so the mask
and the fill agree when the widgets do.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ...ldm3d_core import distance, layouts, ods, ods_fill, ods_warp
from ..shared import validation
from ..shared.common import (
    CATEGORY_STEREO,
    depth_inputs,
    equirect_depth,
    equirect_depth_inputs,
    input_error,
    node_name,
    require_image,
    require_mask,
)
from .inputs import eye_outputs, ipd_input, layout_input
from .ods_nodes import _compute_device


def _geometry_inputs() -> list:
    return [
        ipd_input(
            "Interpupillary distance in metres, as in the Stereo 360 node (use the same value in both "
            "nodes of this pair)."
        ),
        *depth_inputs(),
    ]


class _FillChecks(validation.CheckedNode):
    """The rule both hole nodes share: the depth mapping, once every depth widget is known."""

    @classmethod
    def input_rules(cls, node, values):
        yield validation.depth_problem(node, values)


def _setup(node, image, depth, ipd_m, depth_widgets):
    d, mapping = equirect_depth(node, image, depth, **depth_widgets)
    return d, mapping, ods.ODSGeometry(ipd=float(ipd_m))


class Stereo360HoleMask(_FillChecks):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_Stereo360HoleMask",
            display_name="Stereo 360 Hole Mask",
            category=CATEGORY_STEREO,
            description="Where the left and right eyes of the ODS warp will see behind near objects, mapped back "
            "into the source panorama: one mask to inpaint once (a diffusion inpainting model, wrapping at "
            "the seam), then give the result to Stereo 360 (Filled Holes) so both eyes show the same fill.",
            inputs=[
                *equirect_depth_inputs("Equirectangular RGB panorama, 2:1."),
                *_geometry_inputs(),
                io.Int.Input(
                    "grow_px",
                    default=8,
                    min=0,
                    max=256,
                    tooltip="Grow the mask by this many pixels (wrapping at the seam) so the inpainting sees "
                    "some context around each hole.",
                ),
            ],
            outputs=[io.Mask.Output("mask", display_name="mask", tooltip="1 = inpaint here (source view).")],
        )

    @classmethod
    def execute(cls, image, depth, ipd_m=0.064, grow_px=8, **depth_widgets) -> io.NodeOutput:
        node = node_name(cls)
        d, mapping, geom = _setup(node, image, depth, ipd_m, depth_widgets)
        dev, out_dev = _compute_device()
        masks = []
        for i in range(image.shape[0]):
            r = distance.depth_to_distance(d[i].to(dev), mapping)
            masks.append(ods_fill.source_hole_mask(r, geom, grow_px=int(grow_px)).float().to(out_dev))
        return io.NodeOutput(torch.stack(masks))


class Stereo360FilledHoles(_FillChecks):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_Stereo360FilledHoles",
            display_name="Stereo 360 (Filled Holes)",
            category=CATEGORY_STEREO,
            description="ODS stereo pair whose disocclusions show one inpainted background layer: the "
            "'background' image (the panorama inpainted inside the Stereo 360 Hole Mask) is placed at "
            "background distance and warped into both eyes, filling only their hole pixels. Left and right "
            "see the same fill at their own parallax; every other pixel is the plain forward warp.",
            inputs=[
                *equirect_depth_inputs("Equirectangular RGB panorama, 2:1 (the one the mask was made from)."),
                io.Image.Input("background", tooltip="The panorama inpainted inside 'mask' (same size)."),
                io.Mask.Input("mask", tooltip="The Stereo 360 Hole Mask output the background was inpainted in."),
                *_geometry_inputs(),
                layout_input(
                    "Packing of the 'stereo' output: top_bottom (left eye on top), side_by_side or red-cyan anaglyph."
                ),
            ],
            outputs=[
                *eye_outputs("Left-eye equirect, holes filled.", "Right-eye equirect, holes filled."),
                io.Mask.Output(
                    "filled",
                    display_name="filled",
                    tooltip="1 where either eye's pixel came from the layer (left eye on top, right below).",
                ),
            ],
        )

    @classmethod
    def execute(
        cls, image, depth, background, mask, ipd_m=0.064, layout="top_bottom", **depth_widgets
    ) -> io.NodeOutput:
        node = node_name(cls)
        d, mapping, geom = _setup(node, image, depth, ipd_m, depth_widgets)
        background = require_image(node, "background", background)
        if background.shape[1:3] != image.shape[1:3]:
            raise input_error(
                node,
                "background",
                background,
                f"is not the size of 'image' {tuple(image.shape[1:3])}",
                "inpaint the same panorama (do not resize it)",
            )
        mask = require_mask(node, "mask", mask)
        if mask.shape[-2:] != image.shape[1:3]:
            raise input_error(
                node,
                "mask",
                mask,
                f"is not the size of 'image' {tuple(image.shape[1:3])}",
                "connect the Stereo 360 Hole Mask made from this image",
            )
        dev, out_dev = _compute_device()
        lefts, rights, filled = [], [], []
        for i in range(image.shape[0]):
            r = distance.depth_to_distance(d[i].to(dev), mapping)
            img = image[i, ..., :3].to(dev, torch.float32)
            m = mask[min(i, mask.shape[0] - 1)].to(dev) > 0.5
            bg = background[min(i, background.shape[0] - 1), ..., :3].to(dev, torch.float32)
            layer_image, layer_r = ods_fill.background_layer(img, r, bg, m)
            holes = []
            for eye, out in (("left", lefts), ("right", rights)):
                plain = ods_warp.render_eye(img, r, eye, geom, fill="background")
                out.append(
                    ods_fill.fill_from_layer(plain, layer_image, layer_r, eye, geom).image.clamp(0, 1).to(out_dev)
                )
                holes.append(plain.hole.float().to(out_dev))
            filled.append(torch.cat(holes, dim=0))
        left, right = torch.stack(lefts), torch.stack(rights)
        return io.NodeOutput(layouts.pack_stereo(left, right, layout, False), left, right, torch.stack(filled))


STEREO_FILL_NODES = [Stereo360HoleMask, Stereo360FilledHoles]
