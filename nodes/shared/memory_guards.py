"""Memory and work guards for every node: refuse (or shrink) work that does not fit, before starting it.

``memory_limit`` is ComfyUI's free-memory figure for the device (90 %; for accelerators the device's total memory,
since ComfyUI offloads models on demand), or the override in the environment variable ``SDL3D_MEMORY_LIMIT_MB``
(megabytes). ``require_memory`` refuses an estimate above it, naming limit and fix. ``work_limit`` /
``require_work`` bound the number of tiles, views and metric pairs (``SDL3D_MAX_TILES``, ``SDL3D_MAX_VIEWS``,
``SDL3D_MAX_PAIRS``); ``plan_tiles`` picks tiles that fit for the VAE nodes. See docs/hardening.md.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

from .common import input_error

ENV_MEMORY_LIMIT = "SDL3D_MEMORY_LIMIT_MB"
MAX_SYNC_VIEWS = 4096  # a 8192x2048 panorama at window 512 / stride 128 has 793; 4096 is already hours of work
MAX_TILES = 4096  # 8192x4096 px in 256 px tiles with 64 px overlap is 946 tiles
MAX_PAIRS = 65536  # crop pairs per Coherence run: the paper's 512x3072 panorama has 15, so ~4,000 panoramas
WORK_LIMITS = {
    "tiles": ("SDL3D_MAX_TILES", MAX_TILES),
    "views": ("SDL3D_MAX_VIEWS", MAX_SYNC_VIEWS),
    "pairs": ("SDL3D_MAX_PAIRS", MAX_PAIRS),
}
MIN_TILE_PX = 64  # the smallest tile the VAE nodes shrink to
VAE_OUTPUT_BYTES_PER_PIXEL = 32  # decoded fp32 RGB, its blended copy and the tile weights
VAE_INPUT_BYTES_PER_PIXEL = 24  # two fp32 RGB copies of the image (wrap padding, VAE input processing)
log = logging.getLogger(__name__)
MIN_LPIPS_RESOLUTION = 32  # LPIPS-alex pools 8x8 maps to nothing below 32 px, LPIPS-vgg below 16 px
# estimates from the layer widths in the code, not measurements:
LPIPS_BYTES_PER_PIXEL = {"vgg": 9000, "alex": 400}  # activations + gradients of one view/anchor pair, fp32
# measured peaks (resident memory; tests/test_memory_estimates.py checks them at 8192x4096):
STEREO_OUTPUT_BYTES_PER_PIXEL = 80  # per image: eyes 2 x 12, stereo 24, anaglyph 12, holes 2 x 4, disparity 12
STEREO_WORK_BYTES_PER_PIXEL = {1: 12, 2: 180}  # on top, by supersample: one eye's warp (2x: at 4x the pixels)
MESH_BYTES_PER_VERTEX = 55  # positions 12, UVs 8, colours 3, radii 8, two uint32 triangles 24
MESH_CULL_BYTES_PER_VERTEX = 40  # cull_edges: the kept-triangle copy and its mask
MESH_BYTES_PER_PIXEL = 8  # the texture PNG (8-bit copy, PIL's buffer, encoded bytes)
MESH_BYTES_PER_BLOCK_VERTEX = 200  # temporaries of one block of ldm3d_core.mesh.CHUNK vertices (sampling, files)
# SyncDiffusion Coherence, per crop pixel, fp32: LPIPS features kept (vgg 122, alex 10.5 floats/px) + the backbone's
# peak while computing them; per pair: both sides' features, their difference and its square
COHERENCE_CROP_BYTES_PER_PIXEL = {"vgg": 1300, "alex": 160}
COHERENCE_PAIR_BYTES_PER_PIXEL = {"vgg": 2000, "alex": 170}
COHERENCE_PIXELS_PER_CALL = 2**21  # crops per backbone call: at most 8 of 512 px, so progress moves often


def _env_number(name: str) -> tuple[float, str]:
    """The number an environment variable holds (NaN when unset or not a number), and its text."""
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw), raw
    except ValueError:
        return math.nan, raw


def memory_limit(device=None) -> tuple[int, str]:
    """(bytes, how it was chosen): the SDL3D_MEMORY_LIMIT_MB override, else ComfyUI's memory figures."""
    megabytes, override = _env_number(ENV_MEMORY_LIMIT)
    if math.isfinite(megabytes) and megabytes > 0:
        return int(megabytes * 2**20), f"{ENV_MEMORY_LIMIT}={override}"
    import comfy.model_management as mm
    import torch

    device = device or mm.get_torch_device()
    if isinstance(device, str):
        device = torch.device(device)
    if getattr(device, "type", "cpu") == "cpu":
        return int(0.9 * mm.get_free_memory(device)), "90% of the free system memory"
    return int(0.9 * mm.get_total_memory(device)), f"90% of the {device.type} memory"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def require_memory(node: str, name: str, value, estimate: float, fix: str, device=None) -> None:
    """Refuse before allocating when ``estimate`` bytes exceed the memory limit."""
    limit, source = memory_limit(device)
    if estimate > limit:
        raise input_error(
            node,
            name,
            value,
            f"needs about {format_bytes(estimate)}, more than the limit "
            f"{format_bytes(limit)} ({source}; override with {ENV_MEMORY_LIMIT})",
            fix,
        )


def fit_batch(node: str, name: str, value, requested: int, per_item: float, what: str, device=None) -> int:
    """The largest batch <= ``requested`` whose estimate (``per_item`` bytes each, from ComfyUI's own figures)
    fits the memory limit, at least 1; a warning naming the input when it is smaller than asked."""
    limit, source = memory_limit(device)
    fit = requested if per_item <= 0 else max(1, min(requested, int(limit // per_item)))
    if fit < requested:
        log.warning(
            "%s: input '%s' = %s: %d %s per call need about %s, more than the limit %s (%s): running %d per "
            "call instead. Fix: set %s to %d or less (0 = auto)",
            node,
            name,
            value,
            requested,
            what,
            format_bytes(requested * per_item),
            format_bytes(limit),
            source,
            fit,
            name,
            fit,
        )
    return fit


def capped_budget_gib(node: str, name: str, budget_gib: float, device=None) -> float:
    """A user memory budget above the memory limit is lowered to it (with a warning): batches are planned from
    the budget, so a budget larger than the machine would plan batches that cannot fit."""
    limit, source = memory_limit(device)
    if budget_gib * 2**30 <= limit:
        return budget_gib
    log.warning(
        "%s: input '%s' = %s: is more than the memory limit %s (%s): planning with %s instead. Fix: use 0 (auto) "
        "or at most %.1f",
        node,
        name,
        budget_gib,
        format_bytes(limit),
        source,
        format_bytes(limit),
        limit / 2**30,
    )
    return limit / 2**30


def coherence_batches(node: str, net: str, crop: int, device=None) -> tuple[int, int]:
    """(crops per backbone call, pairs per comparison call) of SyncDiffusion Coherence that fit the memory limit
    (features of two crop groups in half of it, a pair chunk in a quarter); refused when not even one crop pair
    fits."""
    limit, _ = memory_limit(device)
    per_crop = COHERENCE_CROP_BYTES_PER_PIXEL.get(net, COHERENCE_CROP_BYTES_PER_PIXEL["vgg"]) * crop * crop
    per_pair = COHERENCE_PAIR_BYTES_PER_PIXEL.get(net, COHERENCE_PAIR_BYTES_PER_PIXEL["vgg"]) * crop * crop
    require_memory(
        node,
        "crop_size",
        crop,
        2 * per_crop + per_pair,
        "lower crop_size (the paper uses 512) or raise the limit",
        device,
    )
    crops = max(1, min(int(limit // 4 // per_crop), COHERENCE_PIXELS_PER_CALL // (crop * crop)))
    return crops, max(1, min(int(limit // 4 // per_pair), 4096))


def lpips_memory(net: str, resolution: int) -> int:
    """Bytes LPIPS needs for one view/anchor pair at ``resolution`` x ``resolution`` (with gradients)."""
    return int(LPIPS_BYTES_PER_PIXEL.get(net, LPIPS_BYTES_PER_PIXEL["vgg"]) * resolution * resolution)


def mesh_memory(
    mesh_width: int, mesh_height: int, image_width: int = 0, image_height: int = 0, cull_edges: bool = False
) -> int:
    """Peak bytes of Save 360 Depth Mesh for one image: the mesh, the texture, one block of work (any format)."""
    from ...ldm3d_core.mesh import CHUNK

    vertices = (mesh_width + 1) * mesh_height
    per_vertex = MESH_BYTES_PER_VERTEX + (MESH_CULL_BYTES_PER_VERTEX if cull_edges else 0)
    block = MESH_BYTES_PER_BLOCK_VERTEX * min(vertices, CHUNK)
    return int(per_vertex * vertices + MESH_BYTES_PER_PIXEL * image_width * image_height + block)


def stereo_memory(width: int, height: int, batch: int, warp: str, supersample: int) -> int:
    """Peak bytes of Stereo 360: its seven outputs for the batch plus one eye's warp (backward warps at 1x)."""
    work = STEREO_WORK_BYTES_PER_PIXEL[2 if warp == "forward" and supersample == 2 else 1]
    return int(width * height * (STEREO_OUTPUT_BYTES_PER_PIXEL * batch + work))


def require_lpips_resolution(node: str, net: str, resolution: int) -> None:
    if 0 < resolution < MIN_LPIPS_RESOLUTION:
        raise input_error(
            node,
            "resolution",
            resolution,
            f"is too small for LPIPS (its pooling layers need at least {MIN_LPIPS_RESOLUTION} px)",
            f"use 0 (native) or {MIN_LPIPS_RESOLUTION} or more",
        )
    if resolution > 0:
        require_memory(
            node,
            "resolution",
            resolution,
            lpips_memory(net, resolution),
            "lower the resolution (256 is ~4x cheaper than 512), or use net = alex",
        )


def work_limit(kind: str) -> tuple[int, str]:
    """(count, how it was chosen) for 'tiles', 'views' or 'pairs': the environment variable, else the default."""
    env, default = WORK_LIMITS[kind]
    value, raw = _env_number(env)
    if math.isfinite(value) and value >= 1:
        return int(value), f"{env}={raw}"
    return default, f"the default; override with {env}"


def require_work(node: str, name: str, value, count: int, kind: str, what: str, fix: str) -> int:
    """Refuse work of more than ``work_limit(kind)`` tiles/views/pairs before anything is allocated."""
    limit, source = work_limit(kind)
    if count > limit:
        raise input_error(node, name, value, f"gives {count:,} {kind} ({what}); the limit is {limit:,} ({source})", fix)
    return count


def sync_view_count(
    latent_h: int, latent_w: int, window: tuple[int, int], stride: tuple[int, int], circular: bool
) -> int:
    """Number of views of the grid sync_core.views.build_view_grid would build (counted, not built)."""
    from ...sync_core import views as core_views

    rows = len(core_views.axis_offsets(latent_h, window[0], stride[0], False, "height"))
    cols = len(core_views.axis_offsets(latent_w, window[1], stride[1], circular, "width"))
    return rows * cols


def require_view_count(
    node: str, latent_h: int, latent_w: int, window: tuple[int, int], stride: tuple[int, int], circular: bool
) -> int:
    """Refuse grids with more views than ``work_limit('views')`` before anything is built (latent units)."""
    from ...sync_core import views as core_views

    fitted, steps, _notes = core_views.fit_window(latent_h, latent_w, window, stride)
    count = sync_view_count(latent_h, latent_w, fitted, steps, circular)
    name, value = ("stride_height", stride[0] * 8) if stride[0] < stride[1] else ("stride", stride[1] * 8)
    return require_work(
        node,
        name,
        value,
        count,
        "views",
        f"window {window[1] * 8}x{window[0] * 8}, stride {stride[1] * 8}x{stride[0] * 8} px over a "
        f"{latent_w * 8}x{latent_h * 8} px image",
        f"raise {name} (a quarter of the window is typical), raise the window, or sample a smaller image and "
        "upscale it",
    )


# ---------------------------------------------------------------- tiles of the VAE nodes


@dataclass(frozen=True)
class TilePlan:
    """Tiles for one VAE pass, in latent units: tile 0 = one piece; count = tiles per sample."""

    tile: int
    overlap: int
    count: int


def tile_count(grid: tuple[int, int], tile: int, overlap: int, circular: bool) -> int:
    """Tiles ldm3d_core.tiling.tiled_apply runs over a (h, w) latent grid (tile 0 = one piece)."""
    from ...ldm3d_core import tiling

    if not tile:
        return 1
    rows = len(tiling.tile_starts(grid[0], tile, overlap))
    cols = len((tiling.circular_tile_starts if circular else tiling.tile_starts)(grid[1], tile, overlap))
    return rows * cols


def plan_tiles(
    node: str,
    what: str,
    grid: tuple[int, int],
    tile: int,
    overlap: int,
    scale: int,
    circular: bool,
    piece_cost: Callable[[int, int], float],
    device=None,
) -> TilePlan:
    """Tiles that fit: ``piece_cost(h, w)`` (bytes for one piece of h x w latent units, e.g. ComfyUI's
    ``memory_used_decode``) is checked against ``memory_limit(device)``. A piece that does not fit (untiled, or
    a tile) becomes tiles of half the size until one fits (at least MIN_TILE_PX; a warning names the new tiles);
    refused when not even that fits, or when the tiles are more than ``work_limit('tiles')``."""
    limit, source = memory_limit(device)
    h, w = grid
    height, width = h * scale, w * scale
    requested = tile * scale
    if tile:
        cost = piece_cost(min(tile, h), min(tile, w))
    else:
        cost = piece_cost(h, w + (2 * min(max(1, overlap), w) if circular else 0))
    if cost > limit:
        tile_px = requested or min(1024, 2 ** max(6, math.floor(math.log2(max(height, width)))))
        while tile_px > MIN_TILE_PX and (
            tile_px >= max(height, width) or piece_cost(min(tile_px // scale, h), min(tile_px // scale, w)) > limit
        ):
            tile_px = max(MIN_TILE_PX, tile_px // 2)
        small = piece_cost(min(tile_px // scale, h), min(tile_px // scale, w))
        require_memory(
            node,
            "tile_size",
            requested,
            small,
            f"{what} a smaller image, or raise the limit: even {tile_px} px tiles do not fit",
            device,
        )
        lap_px = min(overlap * scale, tile_px // 4) if tile else tile_px // 8
        log.warning(
            "%s: input 'tile_size' = %d: %s %s of %dx%d px needs about %s, more than the limit %s (%s): "
            "running %d px tiles with %d px overlap instead. Fix: set tile_size to %d or lower",
            node,
            requested,
            "a tile" if tile else "one untiled",
            what,
            width,
            height,
            format_bytes(cost),
            format_bytes(limit),
            source,
            tile_px,
            lap_px,
            tile_px,
        )
        tile, overlap = max(1, tile_px // scale), lap_px // scale
    count = tile_count(grid, tile, overlap, circular)
    step = (tile - overlap) * scale
    name, value = ("overlap", overlap * scale) if 2 * overlap >= tile else ("tile_size", tile * scale)
    require_work(
        node,
        name,
        value,
        count,
        "tiles",
        f"{tile * scale} px tiles every {step} px over {width}x{height} px",
        "raise tile_size or lower overlap (tiles start every tile_size - overlap px), or set tile_size 0 (untiled)",
    )
    return TilePlan(tile, overlap, count)
