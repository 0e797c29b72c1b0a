"""Stereo 360 outputs: pack two eyes into one VR frame, and a VR-aware save node (file names players recognise).

Thin adapters over ``ldm3d_core.layouts``. IMAGE is [B,H,W,3] in [0,1].
"""

from __future__ import annotations

import numpy as np
from comfy_api.latest import io, ui

from ...ldm3d_core import layouts
from ..shared import comfy_compat, file_guards, validation
from ..shared.common import CATEGORY_STEREO, input_error, node_name, require_image


class StereoPack(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_StereoPack",
            display_name="Stereo 360 Pack Eyes",
            category=CATEGORY_STEREO,
            description="Pack a left and a right eye (e.g. after inpainting their holes) into one VR frame: "
            "top_bottom (left eye on top), side_by_side (left eye left) or red-cyan anaglyph.",
            inputs=[
                io.Image.Input("left", tooltip="Left-eye image."),
                io.Image.Input("right", tooltip="Right-eye image, same size and batch as left."),
                io.Combo.Input(
                    "layout",
                    options=list(layouts.LAYOUTS),
                    default="top_bottom",
                    tooltip="top_bottom (_360_TB), side_by_side (_360_LR) or anaglyph.",
                ),
                io.Boolean.Input("swap_eyes", default=False, tooltip="Exchange the eyes before packing."),
            ],
            outputs=[io.Image.Output("stereo", display_name="stereo", tooltip="The packed stereo frame.")],
        )

    @classmethod
    def execute(cls, left, right, layout, swap_eyes) -> io.NodeOutput:
        node = node_name(cls)
        require_image(node, "left", left)
        require_image(node, "right", right)
        if tuple(left.shape) != tuple(right.shape):
            raise input_error(
                node,
                "right",
                right,
                f"shape differs from left {tuple(left.shape)}",
                "give both eyes the same size and batch",
            )
        if layout not in layouts.LAYOUTS:
            raise input_error(node, "layout", layout, "unknown layout", f"use one of {layouts.LAYOUTS}")
        return io.NodeOutput(layouts.pack_stereo(left, right, layout, swap_eyes))


class SaveStereo360(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SaveStereo360",
            display_name="Save Stereo 360 (VR)",
            category=CATEGORY_STEREO,
            description="Save packed stereo 360 frames as PNG under ComfyUI's output folder with the suffix VR "
            "players auto-detect: <prefix>_00001_360_TB.png (top-bottom) or _360_LR (side-by-side).",
            is_output_node=True,
            inputs=[
                io.Image.Input("images", tooltip="Packed stereo frames (Stereo 360 'stereo' output or Pack Eyes)."),
                io.Combo.Input(
                    "layout",
                    options=["auto", "top_bottom", "side_by_side"],
                    default="auto",
                    tooltip="Layout of the frames; auto = square is top_bottom, 4:1 is side_by_side.",
                ),
                io.String.Input(
                    "filename_prefix",
                    default="stereo360/ODS",
                    tooltip="File name prefix inside the output folder; may contain a subfolder and "
                    "%date% style variables like Save Image.",
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
        )

    RULE_INPUTS = ("filename_prefix",)

    @classmethod
    def input_rules(cls, node, values):
        yield validation.prefix_problem(node, values)

    @classmethod
    def execute(cls, images, layout, filename_prefix) -> io.NodeOutput:
        from PIL import Image

        node = node_name(cls)
        require_image(node, "images", images, channels=(3, 4))
        height, width = images.shape[1:3]
        chosen = layouts.detect_layout(height, width) if layout == "auto" else layout
        if chosen is None:
            raise input_error(
                node,
                "layout",
                layout,
                f"cannot tell the layout of a {width}x{height} frame",
                "pick top_bottom or side_by_side explicitly",
            )
        if chosen not in layouts.FILE_SUFFIX:
            raise input_error(node, "layout", layout, "unknown layout", "use auto, top_bottom or side_by_side")
        eye_h, eye_w = (height // 2, width) if chosen == "top_bottom" else (height, width // 2)
        if eye_h < MIN_EYE[0] or eye_w < MIN_EYE[1] or (height % 2 if chosen == "top_bottom" else width % 2):
            raise input_error(
                node,
                "images",
                images,
                f"a {width}x{height} frame does not split into two "
                f"{chosen.replace('_', '-')} eyes of at least {MIN_EYE[1]}x{MIN_EYE[0]} px",
                "save the 'stereo' output of Stereo 360 or Stereo 360 Pack Eyes",
            )
        folder, filename, counter, subfolder = file_guards.output_folder(
            node, "filename_prefix", filename_prefix, width, height
        )
        metadata = comfy_compat.png_metadata(cls)
        results = []
        for b in range(images.shape[0]):
            arr = np.clip(255.0 * images[b].detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
            name = f"{filename.replace('%batch_num%', str(b))}_{counter:05}{layouts.FILE_SUFFIX[chosen]}.png"
            path = file_guards.output_file(node, "filename_prefix", filename_prefix, folder, name)
            with file_guards.saving(node, "filename_prefix", filename_prefix):
                Image.fromarray(arr).save(path, pnginfo=metadata, compress_level=4)
            results.append(ui.SavedResult(name, subfolder, io.FolderType.output))
            counter += 1
        return io.NodeOutput(ui=ui.SavedImages(results))


MIN_EYE = (4, 8)  # smallest eye (height, width) a VR player can treat as an equirect


STEREO_OUTPUT_NODES = [StereoPack, SaveStereo360]
