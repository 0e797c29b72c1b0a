"""VAE Decode (360 / Tiled) and VAE Encode (Tiled) for any ComfyUI image VAE (4- or 16-channel latents).

The tiling and the horizontal wrap are ldm3d_core.tiling (the same implementation as LDM3D Decode); each tile goes
through the VAE's own `decode` / `encode` (ComfyUI's memory management, dtype and output processing), so with
tiling off and circular off the result is exactly the stock VAE Decode / VAE Encode.
Layouts: LATENT {"samples": [B,C,h,w]}; IMAGE [B,H,W,3] in [0,1]; tile sizes are given in pixels.
Guards (nodes/shared/memory_guards.py): overlap < tile_size at queue time; before any work, the output buffers and one
piece (ComfyUI's own `memory_used_decode` / `memory_used_encode`) against the memory limit, switching to smaller
tiles when a piece does not fit, and the tile count against SDL3D_MAX_TILES.
"""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ...ldm3d_core import tiling
from ..ldm3d import ldm3d_vae
from ..shared import memory_guards, validation
from ..shared.common import PACK_CATEGORY, input_error, node_name, require_finite, require_image
from .whole_image import per_sample, whole_image_norm

CATEGORY_VAE = f"{PACK_CATEGORY}/vae"
LATENT_FAMILIES = {4: "SD1.x / SD2.x / SDXL (their VAE, taesd, taesdxl)", 16: "SD3.x / Flux (their VAE, taesd3, taef1)"}


def _require_image_vae(node: str, vae):
    if vae is None or not hasattr(vae, "first_stage_model") or not hasattr(vae, "decode"):
        raise input_error(node, "vae", vae, "not a ComfyUI VAE", "connect a Load Checkpoint or Load VAE output")
    if getattr(vae, "latent_dim", 2) != 2:
        raise input_error(
            node,
            "vae",
            f"VAE with {vae.latent_dim}-D latents",
            "this node tiles image VAEs (2-D latents) only",
            "use the stock VAE Decode (Tiled) node for video/audio VAEs",
        )
    return vae


def _scale(vae) -> int:
    return int(vae.spacial_compression_decode())


def _family(channels: int) -> str:
    return LATENT_FAMILIES.get(channels, "another model family")


def _require_matching_vae(node: str, vae, z: torch.Tensor) -> None:
    """A latent from another model family: the VAE choice is what to change (the latent came from the model)."""
    if z.shape[1] != vae.latent_channels:
        raise input_error(
            node,
            "vae",
            f"VAE for {vae.latent_channels}-channel latents",
            f"does not fit the {z.shape[1]}-channel latent in 'samples' ({_family(z.shape[1])}); this VAE is "
            f"for {_family(vae.latent_channels)}",
            f"connect the VAE of the model that made the latent: {_family(z.shape[1])}",
        )


def _tile_units(node: str, tile_size: int, overlap: int, scale: int) -> tuple[int, int]:
    """Pixel tile/overlap -> latent units; tile_size 0 = one piece."""
    validation.require_overlap_below_tile(node, tile_size, overlap)
    lap = overlap // scale
    tile = max(lap + 1, tile_size // scale) if tile_size else 0
    return tile, lap


def _progress():
    pbar = comfy.utils.ProgressBar(1)

    def report(done: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        pbar.update_absolute(done, total)

    return report


def decode_360(vae, z: torch.Tensor, tile: int, overlap: int, circular: bool) -> torch.Tensor:
    """Latent [B,C,h,w] -> IMAGE [B,H,W,C]; tile/overlap in latent units (tile 0 = one piece)."""

    def decode_fn(t: torch.Tensor) -> torch.Tensor:
        return vae.decode(t).movedim(-1, 1)

    if not tile:
        if not circular:
            return vae.decode(z)
        return tiling.apply_circular(z, decode_fn, max(1, overlap), 1, _scale(vae)).movedim(1, -1)
    whole = whole_image_norm(vae, "decoder")  # GroupNorm statistics over the whole image
    out = per_sample(
        tiling.decode_tiled,
        z,
        decode_fn,
        tile,
        overlap,
        _scale(vae),
        circular_x=circular,
        progress=_progress(),
        whole_image=whole,
    )
    return out.movedim(1, -1)


def encode_tiled(vae, pixels: torch.Tensor, tile: int, overlap: int, circular: bool) -> torch.Tensor:
    """IMAGE [B,H,W,C] (cropped to multiples of the VAE scale) -> latent [B,C,h,w]; units as in decode_360."""
    pixels = vae.vae_encode_crop_pixels(pixels)
    scale = int(vae.spacial_compression_encode())

    def encode_fn(t: torch.Tensor) -> torch.Tensor:
        return vae.encode(t.movedim(1, -1))

    if not tile:
        if not circular:
            return vae.encode(pixels)
        return tiling.apply_circular(pixels.movedim(-1, 1), encode_fn, max(1, overlap), scale, 1)
    whole = whole_image_norm(vae, "encoder")  # GroupNorm statistics over the whole image
    args = (encode_fn, tile, overlap, scale)
    return per_sample(
        tiling.encode_tiled, pixels.movedim(-1, 1), *args, circular_x=circular, progress=_progress(), whole_image=whole
    )


def _vae_and_tile_inputs(default_circular: bool) -> list:
    """What follows the latent / image on both nodes: the VAE and the tiling widgets."""
    return [
        io.Vae.Input("vae", tooltip="The VAE that belongs to the model (any 2-D image VAE)."),
        io.Boolean.Input(
            "circular",
            default=default_circular,
            tooltip="360 panorama: the left and right edges touch. Tiles wrap around the seam (or, "
            "untiled, the input is padded with wrapped columns) so the 0/360 join has no jump.",
        ),
        io.Int.Input(
            "tile_size",
            default=1024,
            min=0,
            max=8192,
            step=64,
            tooltip="Tile size in pixels (square). 0 = one piece (no tiling). Smaller tiles need less "
            "memory; tiles are blended over the overlap. GroupNorm uses statistics of the whole "
            "image and attention runs on the whole image; still not bit-exact vs untiled (convolutions "
            "see only their tile), larger tiles are closer.",
        ),
        io.Int.Input(
            "overlap",
            default=64,
            min=0,
            max=4096,
            step=8,
            tooltip="Tile overlap in pixels, blended linearly; must be < tile_size. With circular on and "
            "tile_size 0 it is the wrap padding added on each side (at least one latent pixel).",
        ),
    ]


class VAEDecode360(validation.TileCheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_VAEDecode360",
            display_name="VAE Decode (360 / Tiled)",
            category=CATEGORY_VAE,
            description="Decode a latent with any image VAE (SD1.x/SDXL 4-channel, SD3/Flux 16-channel, TAESD): "
            "seam-free 360 decoding (horizontal wrap) and/or tiles with blended overlaps for large "
            "panoramas. circular off + tile_size 0 is exactly the stock VAE Decode.",
            inputs=[
                io.Latent.Input("samples", tooltip="The latent to decode (e.g. a circular SyncDiffusion panorama)."),
                *_vae_and_tile_inputs(True),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="Decoded IMAGE [B,H,W,3] in [0,1].")],
        )

    @classmethod
    def execute(cls, samples, vae, circular=True, tile_size=1024, overlap=64) -> io.NodeOutput:
        node = node_name(cls)
        vae = _require_image_vae(node, vae)
        z = samples.get("samples") if isinstance(samples, dict) else None
        if not isinstance(z, torch.Tensor) or z.ndim != 4:
            raise input_error(
                node,
                "samples",
                samples,
                "expected a LATENT with samples [B,C,h,w]",
                "connect a KSampler / SyncDiffusion KSampler output",
            )
        _require_matching_vae(node, vae, z)
        require_finite(node, "samples", z)
        scale = _scale(vae)
        tile, lap = _tile_units(node, tile_size, overlap, scale)
        height, width = z.shape[-2] * scale, z.shape[-1] * scale
        memory_guards.require_memory(
            node,
            "samples",
            samples,
            z.shape[0] * height * width * memory_guards.VAE_OUTPUT_BYTES_PER_PIXEL,
            f"the decoded {width}x{height} image alone is too large: decode a smaller latent (split the "
            "panorama or decode fewer samples at once) or raise the limit",
            device="cpu",
        )
        plan = memory_guards.plan_tiles(
            node,
            "decode",
            (z.shape[-2], z.shape[-1]),
            tile,
            lap,
            scale,
            bool(circular),
            lambda h, w: vae.memory_used_decode((1, z.shape[1], h, w), vae.vae_dtype),  # per sample, as ComfyUI
            vae.device,
        )
        return io.NodeOutput(decode_360(vae, z, plan.tile, plan.overlap, bool(circular)))


class VAEEncodeTiled(validation.TileCheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_VAEEncodeTiled",
            display_name="VAE Encode (Tiled)",
            category=CATEGORY_VAE,
            description="Encode an IMAGE with any image VAE in tiles with blended overlaps (large panoramas, "
            "img2img / upscaling), optionally wrapping the left and right edges of a 360 panorama. "
            "Sizes are cropped to multiples of 8 like the stock VAE Encode; circular off + tile_size 0 "
            "is exactly the stock VAE Encode.",
            inputs=[
                io.Image.Input("pixels", tooltip="IMAGE [B,H,W,3] in [0,1]."),
                *_vae_and_tile_inputs(False),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The encoded latent {'samples': [B,C,h,w]}.")],
        )

    @classmethod
    def execute(cls, pixels, vae, circular=False, tile_size=1024, overlap=64) -> io.NodeOutput:
        node = node_name(cls)
        vae = _require_image_vae(node, vae)
        if ldm3d_vae.is_ldm3d_vae(vae):
            raise input_error(
                node,
                "vae",
                f"LDM3D VAE ({vae.ldm3d_channels} channels: RGB + depth)",
                "encodes an image together with its depth, and this node has no depth input",
                "use the 'LDM3D Encode' node (image + depth MASK) for LDM3D, or connect an RGB VAE here",
            )
        pixels = require_image(node, "pixels", pixels, channels=(3, 4))[..., :3]
        scale = int(vae.spacial_compression_encode())
        if pixels.shape[1] < scale or pixels.shape[2] < scale:
            raise input_error(
                node, "pixels", pixels, f"is smaller than one latent pixel ({scale} px)", "use a larger image"
            )
        tile, lap = _tile_units(node, tile_size, overlap, scale)
        batch, height, width = pixels.shape[0], pixels.shape[1] // scale * scale, pixels.shape[2] // scale * scale
        memory_guards.require_memory(
            node,
            "pixels",
            pixels,
            batch * height * width * memory_guards.VAE_INPUT_BYTES_PER_PIXEL,
            f"the {width}x{height} image alone is too large to prepare for encoding: encode a smaller image "
            "(or fewer at once) or raise the limit",
            device="cpu",
        )
        plan = memory_guards.plan_tiles(
            node,
            "encode",
            (height // scale, width // scale),
            tile,
            lap,
            scale,
            bool(circular),
            lambda h, w: vae.memory_used_encode((1, 3, h * scale, w * scale), vae.vae_dtype),
            vae.device,
        )
        return io.NodeOutput({"samples": encode_tiled(vae, pixels, plan.tile, plan.overlap, bool(circular))})


VAE_NODES = [VAEDecode360, VAEEncodeTiled]
