"""Depth nodes: pack 16-bit depth into an RGB-like IMAGE and back, save / load true 16-bit greyscale PNGs.

Layouts: depth MASK [B,H,W] float in [0,1] (white = near); packed IMAGE [B,H,W,3] with R = G = high byte / 255,
B = low byte / 255 (the Intel/ldm3d 6-channel layout). Math in ldm3d_core.rgbd / depth_png.
"""

from __future__ import annotations

import json
import logging
import os

import folder_paths
import numpy as np
import torch
from comfy_api.latest import io, ui
from PIL.PngImagePlugin import PngInfo

from ...ldm3d_core import depth_png, rgbd
from ..shared import file_guards, validation
from ..shared.common import CATEGORY_DEPTH, input_error, node_name, require_image, require_mask

log = logging.getLogger(__name__)


class PackDepthRGB(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_PackDepthRGB",
            display_name="Pack Depth to RGB (16-bit)",
            category=CATEGORY_DEPTH,
            description="Pack a depth map as a 16-bit code (round(depth*65535)) into an RGB-like IMAGE: R = G = high "
            "byte, B = low byte (Intel/ldm3d 6-channel layout). Exact for all 65,536 codes when saved "
            "as an 8-bit PNG.",
            inputs=[io.Mask.Input("depth", tooltip="Depth [B,H,W] in [0,1].")],
            outputs=[io.Image.Output(display_name="packed", tooltip="RGB-like IMAGE carrying the 16-bit code.")],
        )

    @classmethod
    def execute(cls, depth) -> io.NodeOutput:
        node = node_name(cls)
        depth = require_mask(node, "depth", depth)
        return io.NodeOutput(rgbd.pack_depth_rgb(depth))


class UnpackDepthRGB(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_UnpackDepthRGB",
            display_name="Unpack RGB to Depth (16-bit)",
            category=CATEGORY_DEPTH,
            description="Inverse of Pack Depth: depth = (256*round(255*G) + round(255*B)) / 65535; R is ignored.",
            inputs=[
                io.Image.Input("packed", tooltip="RGB-like IMAGE (G = high byte, B = low byte)."),
                io.Combo.Input(
                    "mode",
                    options=list(rgbd.MODES_6CH),
                    default="exact",
                    tooltip="'exact' uses both bytes; 'hi_only' drops the low byte.",
                ),
            ],
            outputs=[io.Mask.Output(display_name="depth", tooltip="Depth [B,H,W] in [0,1].")],
        )

    @classmethod
    def execute(cls, packed, mode="exact") -> io.NodeOutput:
        node = node_name(cls)
        packed = require_image(node, "packed", packed)
        if mode not in rgbd.MODES_6CH:
            raise input_error(node, "mode", mode, "unknown mode", f"choose one of {rgbd.MODES_6CH}")
        return io.NodeOutput(rgbd.unpack_depth_rgb(packed, mode)[0])


def _png_metadata(cls) -> PngInfo | None:
    from comfy.cli_args import args

    hidden = getattr(cls, "hidden", None)
    if args.disable_metadata or hidden is None:
        return None
    info = PngInfo()
    if hidden.prompt is not None:
        info.add_text("prompt", json.dumps(hidden.prompt))
    if hidden.extra_pnginfo is not None:
        for key, value in hidden.extra_pnginfo.items():
            info.add_text(key, json.dumps(value))
    return info


class SaveDepthPNG16(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SaveDepthPNG16",
            display_name="Save Depth PNG (16-bit)",
            category=CATEGORY_DEPTH,
            description="Save depth as true 16-bit greyscale PNGs (code = round(depth*65535), white = near) in "
            "ComfyUI's output folder, with the usual filename_prefix rules (subfolders, %date% ...).",
            inputs=[
                io.Mask.Input("depth", tooltip="Depth [B,H,W] in [0,1] (e.g. LDM3D Decode's depth)."),
                io.String.Input(
                    "filename_prefix",
                    default="ldm3d/depth16",
                    tooltip="Prefix under the output folder; may contain subfolders and %date:...%.",
                ),
            ],
            outputs=[],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    RULE_INPUTS = ("filename_prefix",)

    @classmethod
    def input_rules(cls, node, values):
        yield validation.prefix_problem(node, values)

    @classmethod
    def execute(cls, depth, filename_prefix="ldm3d/depth16") -> io.NodeOutput:
        node = node_name(cls)
        depth = require_mask(node, "depth", depth)
        if depth.min().item() < 0 or depth.max().item() > 1:
            raise input_error(
                node,
                "depth",
                depth,
                f"values span [{depth.min().item():.4g}, {depth.max().item():.4g}], outside [0, 1]",
                "normalise the depth first (16-bit PNG codes cover [0, 1])",
            )
        height, width = depth.shape[1:]
        folder, filename, counter, subfolder = file_guards.output_folder(
            node, "filename_prefix", filename_prefix, width, height
        )
        codes = rgbd.depth_to_code(depth).cpu().numpy().astype(np.uint16)
        metadata = _png_metadata(cls)
        results = []
        for index, code in enumerate(codes):
            name = f"{filename.replace('%batch_num%', str(index))}_{counter:05}_.png"
            path = file_guards.output_file(node, "filename_prefix", filename_prefix, folder, name)
            with file_guards.saving(node, "filename_prefix", filename_prefix):
                depth_png.save_depth_png(path, code, pnginfo=metadata)
            results.append(ui.SavedResult(name, subfolder, io.FolderType.output))
            counter += 1
        return io.NodeOutput(ui=ui.SavedImages(results))


def _input_files() -> list[str]:
    folder = folder_paths.get_input_directory()
    if not os.path.isdir(folder):
        return []
    files = [f for f in os.listdir(folder) if os.path.isfile(os.path.join(folder, f))]
    return sorted(folder_paths.filter_files_content_types(files, ["image"]))


class LoadDepthPNG(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LoadDepthPNG",
            display_name="Load Depth PNG (16-bit)",
            category=CATEGORY_DEPTH,
            description="Load a single-channel depth PNG from the input folder as a depth MASK [1,H,W] in [0,1]. "
            "16-bit files are exact (code / 65535); 8-bit files are accepted with a warning and "
            "bits = 8; colour PNGs are refused.",
            inputs=[
                io.Combo.Input(
                    "image",
                    options=_input_files(),
                    upload=io.UploadType.image,
                    tooltip="A 16-bit greyscale PNG in ComfyUI's input folder.",
                )
            ],
            outputs=[
                io.Mask.Output(display_name="depth", tooltip="Depth [1,H,W] in [0,1]."),
                io.Int.Output(display_name="bits", tooltip="Bit depth of the file: 16, or 8 (reduced precision)."),
            ],
        )

    @classmethod
    def execute(cls, image) -> io.NodeOutput:
        node = node_name(cls)
        path = file_guards.require_image_file(node, "image", image)
        try:
            loaded = depth_png.load_depth_png(path)
        except depth_png.DepthPNGError as e:
            raise input_error(
                node,
                "image",
                image,
                f"not a greyscale depth PNG: {e}",
                "save depth as a 16-bit greyscale PNG (e.g. Save Depth PNG 16-bit); for a packed RGB "
                "depth use Load Image + Unpack RGB to Depth",
            ) from e
        except (OSError, ValueError) as e:
            raise input_error(
                node,
                "image",
                image,
                f"cannot be read as an image ({type(e).__name__})",
                "use a 16-bit greyscale PNG file",
            ) from e
        if loaded.bits == 8:
            log.warning(
                "%s: input 'image' = %r is an 8-bit PNG: depth has only 256 levels (bits output = 8)", node, image
            )
        return io.NodeOutput(torch.from_numpy(loaded.depth).unsqueeze(0), loaded.bits)

    @classmethod
    def fingerprint_inputs(cls, image):
        node = node_name(cls)
        try:  # a refused name is reported by validate_inputs / execute; its fingerprint is just the name
            path = file_guards.require_image_file(node, "image", image)
        except (validation.NodeInputError, OSError):
            return image
        return file_guards.file_fingerprint(path)

    RULE_INPUTS = ("image",)

    @classmethod
    def input_rules(cls, node, values):
        image = values["image"]
        if image is None:
            return
        try:
            file_guards.require_image_file(node, "image", image)
        except validation.NodeInputError as err:
            yield str(err)
        except OSError as err:
            yield str(
                input_error(
                    node, "image", image, f"cannot be read ({type(err).__name__})", "check the file's permissions"
                )
            )


DEPTH_NODES = [PackDepthRGB, UnpackDepthRGB, SaveDepthPNG16, LoadDepthPNG]
