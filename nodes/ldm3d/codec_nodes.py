"""LDM3D Decode and Encode: RGBD latents <-> RGB IMAGE + 16-bit-exact depth, whole or in tiles (360-aware).

Layouts: IMAGE [B,H,W,3] in [0,1]; depth MASK [B,H,W] float in [0,1], white = near (LDM3D convention);
LATENT {"samples": [B,4,H/8,W/8]} unscaled (as stock VAE Encode/Decode). Math lives in ldm3d_core.rgbd/tiling.
"""

from __future__ import annotations

import logging

import comfy.utils
import torch
from comfy_api.latest import io

from ...ldm3d_core import rgbd
from ..shared import memory_guards, validation
from ..shared.common import (
    CATEGORY_LDM3D,
    input_error,
    node_name,
    require_finite,
    require_image,
    require_mask,
    require_same_size,
)
from . import ldm3d_vae

DECODED_BYTES_PER_PIXEL = 4 * (6 + 3 + 1 + 3)  # decoded RGBD + rgb + depth + preview, fp32
ENCODE_BYTES_PER_PIXEL = 4 * (3 + 1 + 6 + 6)  # resized rgb + depth + merged RGBD + the VAE's float copy
log = logging.getLogger(__name__)


def require_ldm3d_vae(node: str, vae):
    if not ldm3d_vae.is_ldm3d_vae(vae):
        channels = getattr(vae, "output_channels", "?")
        raise input_error(
            node,
            "vae",
            f"{type(vae).__name__} with {channels} output channels",
            "this VAE is not a 4- or 6-channel LDM3D VAE (an ordinary SD VAE has no depth channel)",
            "connect the 'vae' output of the 'LDM3D Loader' node (SDL3D_LDM3DLoader)",
        )
    return vae


def _require_latent(node: str, samples) -> torch.Tensor:
    if (
        not isinstance(samples, dict)
        or not isinstance(samples.get("samples"), torch.Tensor)
        or samples["samples"].ndim != 4
    ):
        raise input_error(
            node,
            "samples",
            samples,
            "expected a LATENT with samples [B,4,h,w]",
            "connect a KSampler or Empty Latent Image output",
        )
    z = samples["samples"]
    if z.shape[1] != 4:
        raise input_error(
            node,
            "samples",
            samples,
            f"LDM3D latents have 4 channels, got {z.shape[1]}",
            "sample with the LDM3D model's MODEL (SD1.x-shaped, 4 latent channels)",
        )
    if min(z.shape[-2:]) < 1 or z.shape[0] < 1:
        raise input_error(node, "samples", samples, "is empty", "connect a latent of at least 8x8 pixels")
    require_finite(node, "samples", z)
    return z


class LDM3DDecode(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LDM3DDecode",
            display_name="LDM3D Decode",
            category=CATEGORY_LDM3D,
            description="Decode an LDM3D latent (fp32) into RGB and a 16-bit-exact depth map. 6-channel VAEs: depth "
            "= (256*round(255*G) + round(255*B)) / 65535; 4-channel: channel 3. Optional tiling for large "
            "panoramas and horizontal wrap for seamless 360 images.",
            inputs=[
                io.Latent.Input("samples", tooltip="LDM3D latent from KSampler."),
                io.Vae.Input("vae", tooltip="The VAE output of LDM3D Loader (4 or 6 channels)."),
                io.Combo.Input(
                    "depth_6ch",
                    options=list(rgbd.MODES_6CH),
                    default="exact",
                    tooltip="6-channel VAEs only: 'exact' uses both bytes (16-bit code); 'hi_only' drops "
                    "the low byte, which a KL-f8 VAE cannot reproduce (about 8-bit accurate).",
                ),
                io.Boolean.Input(
                    "tiled",
                    default=False,
                    tooltip="Decode in overlapping tiles (less memory for large panoramas). The tiles share the "
                    "whole image's GroupNorm statistics; what differs from the untiled decode is the "
                    "convolutions' reach at tile borders (random-weight test: mean |diff| 0.0015 at 256-px "
                    "tiles, 0.014 with per-tile statistics); larger tiles are closer.",
                ),
                io.Int.Input(
                    "tile_size", default=512, min=64, max=4096, step=64, tooltip="Tile size in pixels (tiled only)."
                ),
                io.Int.Input(
                    "overlap",
                    default=128,
                    min=0,
                    max=2048,
                    step=8,
                    tooltip="Tile overlap in pixels, blended linearly (tiled only); must be < tile_size.",
                ),
                io.Boolean.Input(
                    "circular",
                    default=False,
                    tooltip="360 panorama: treat the left and right edges as touching so the seam "
                    "decodes without a jump (wraps tiles, or pads the latent when untiled).",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="RGB IMAGE [B,H,W,3]."),
                io.Mask.Output(display_name="depth", tooltip="Depth [B,H,W] in [0,1], white = near (16-bit exact)."),
                io.Image.Output(display_name="depth_preview", tooltip="Depth as a grey IMAGE for previews."),
            ],
        )

    RULE_INPUTS = ("tiled", *validation.TILE_INPUTS)

    @classmethod
    def input_rules(cls, node, values):
        yield validation.tile_problem(node, values, tiled=bool(values["tiled"]), untiled_fix=False)

    @classmethod
    def execute(
        cls, samples, vae, depth_6ch="exact", tiled=False, tile_size=512, overlap=128, circular=False
    ) -> io.NodeOutput:
        node = node_name(cls)
        vae = require_ldm3d_vae(node, vae)
        z = _require_latent(node, samples)
        if depth_6ch not in rgbd.MODES_6CH:
            raise input_error(node, "depth_6ch", depth_6ch, "unknown mode", f"choose one of {rgbd.MODES_6CH}")
        scale = vae.upscale_ratio
        tiled, tile_size, overlap = _plan_decode(node, vae, z, tiled, tile_size, overlap)
        if tiled:
            validation.require_overlap_below_tile(node, tile_size, overlap, untiled_fix=False)
            tile, lap = max(1, tile_size // scale), overlap // scale
            pbar = comfy.utils.ProgressBar(1)
            decoded = vae.decode_rgbd_tiled(z, tile, min(lap, tile - 1), circular_x=circular, pbar=pbar)
        elif circular:
            decoded = vae.decode_rgbd_circular(z, pad=max(1, min(z.shape[-1], 64 // scale)))
        else:
            decoded = vae.decode_rgbd(z)
        if decoded.shape[-1] != vae.ldm3d_channels:
            raise input_error(
                node,
                "vae",
                vae,
                f"decoded {decoded.shape[-1]} channels, expected {vae.ldm3d_channels}",
                "reload the model with LDM3D Loader",
            )
        rgb, depth, _ = rgbd.split_rgbd(decoded, depth_6ch)
        return io.NodeOutput(rgb, depth, rgbd.depth_preview(depth))


def _plan_decode(node: str, vae, z: torch.Tensor, tiled: bool, tile_size: int, overlap: int) -> tuple[bool, int, int]:
    """Memory guard of LDM3D Decode: refuse when even the decoded image does not fit; switch an untiled decode
    that would not fit to the tiled path (halving the tile until one tile fits)."""
    scale = vae.upscale_ratio
    height, width = z.shape[-2] * scale, z.shape[-1] * scale
    output = z.shape[0] * height * width * DECODED_BYTES_PER_PIXEL
    memory_guards.require_memory(
        node,
        "samples",
        {"samples": z},
        output,
        f"the decoded {width}x{height} image alone is too large: decode a smaller latent "
        "(e.g. split the panorama) or raise the limit",
        device="cpu",
    )
    limit, _ = memory_guards.memory_limit(vae.device)

    def tile_cost(tile_px: int) -> float:
        lat = max(1, tile_px // scale)
        return vae.memory_used_decode((1, z.shape[1], min(lat, z.shape[-2]), min(lat, z.shape[-1])), vae.vae_dtype)

    if not tiled:
        if vae.memory_used_decode(tuple(z.shape), vae.vae_dtype) <= limit:  # per sample: ComfyUI sub-batches
            return False, tile_size, overlap
        tiled = True
        log.warning(
            "%s: an untiled decode of %dx%d needs more than the memory limit: decoding in tiles instead",
            node,
            width,
            height,
        )
    while tile_cost(tile_size) > limit and tile_size > 64:
        tile_size = max(64, tile_size // 2)
        overlap = min(overlap, tile_size // 4)
    memory_guards.require_memory(
        node,
        "tile_size",
        tile_size,
        tile_cost(tile_size),
        "lower tile_size (64 is the smallest) or raise the limit",
        device=vae.device,
    )
    return tiled, tile_size, overlap


class LDM3DEncode(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LDM3DEncode",
            display_name="LDM3D Encode",
            category=CATEGORY_LDM3D,
            description="Encode an RGB IMAGE and a depth MASK into an LDM3D latent (img2img, ldm3d-sr). 6-channel VAEs "
            "get depth packed as 16-bit (G = high byte, B = low byte, R = G). Sizes are cropped to "
            "multiples of 8 like stock VAE Encode.",
            inputs=[
                io.Image.Input("image", tooltip="RGB IMAGE [B,H,W,3] in [0,1]."),
                io.Mask.Input("depth", tooltip="Depth [B,H,W] in [0,1], white = near, same size as the image."),
                io.Vae.Input("vae", tooltip="The VAE output of LDM3D Loader."),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="LDM3D latent for KSampler (img2img).")],
        )

    @classmethod
    def execute(cls, image, depth, vae) -> io.NodeOutput:
        node = node_name(cls)
        vae = require_ldm3d_vae(node, vae)
        image = require_image(node, "image", image)
        depth = require_mask(node, "depth", depth)
        require_same_size(node, "image", image, "depth", depth, image.shape[1:3], depth.shape[1:3])
        if depth.shape[0] not in (1, image.shape[0]) and image.shape[0] != 1:
            raise input_error(
                node,
                "depth",
                depth,
                f"batch {depth.shape[0]} differs from the image batch {image.shape[0]}",
                "give one depth per image (or a single one)",
            )
        require_encodable(node, "image", image, vae, image.shape[2], image.shape[1])
        return io.NodeOutput({"samples": vae.encode_rgbd(image, depth)})


def require_encodable(node: str, name: str, value, vae, width: int, height: int, batch: int = 1) -> None:
    """Smallest size the VAE can encode, and the encode memory estimate against the limit."""
    ratio = vae.downscale_ratio
    if width < ratio or height < ratio:
        raise input_error(
            node,
            name,
            value,
            f"is {width}x{height} px; the VAE needs at least {ratio}x{ratio} (sizes are cropped to multiples of 8)",
            f"upscale the image to at least {ratio}x{ratio}",
        )
    work = vae.memory_used_encode((1, vae.ldm3d_channels, height, width), vae.vae_dtype)  # per sample
    memory_guards.require_memory(
        node,
        name,
        value,
        work,
        "use a smaller size (ldm3d-sr upscales 4x: 128 -> 512), or raise the limit",
        device=vae.device,
    )
    memory_guards.require_memory(
        node,
        name,
        value,
        batch * width * height * ENCODE_BYTES_PER_PIXEL,
        "use a smaller size or raise the limit",
        device="cpu",
    )


LDM3D_CODEC_NODES = [LDM3DDecode, LDM3DEncode]
