"""Memory guards for every node: refuse work whose estimated memory does not fit, before starting it.

``memory_limit`` is ComfyUI's free-memory figure for the device (90 %; for accelerators the device's total memory,
since ComfyUI offloads models on demand), or the override in the environment variable ``SDL3D_MEMORY_LIMIT_MB``
(megabytes). ``require_memory`` refuses an estimate above it, naming limit and fix. See docs/hardening.md.
"""

from __future__ import annotations

import math
import os

from .common import input_error

ENV_MEMORY_LIMIT = "SDL3D_MEMORY_LIMIT_MB"
MAX_SYNC_VIEWS = 4096  # a 8192x2048 panorama at window 512 / stride 128 has 793; 4096 is already hours of work
MIN_LPIPS_RESOLUTION = 32  # LPIPS-alex pools 8x8 maps to nothing below 32 px, LPIPS-vgg below 16 px
# estimates from the layer widths / array counts in the code, not measurements:
LPIPS_BYTES_PER_PIXEL = {"vgg": 9000, "alex": 400}  # activations + gradients of one view/anchor pair, fp32
MESH_BYTES_PER_VERTEX = 320  # float64 grids, float32 buffers, uint32 faces, file buffers


def memory_limit(device=None) -> tuple[int, str]:
    """(bytes, how it was chosen): the SDL3D_MEMORY_LIMIT_MB override, else ComfyUI's memory figures."""
    override = os.environ.get(ENV_MEMORY_LIMIT, "").strip()
    if override:
        try:
            megabytes = float(override)
        except ValueError:
            megabytes = math.nan
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


def fits_memory(estimate: float, device=None) -> bool:
    return estimate <= memory_limit(device)[0]


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


def lpips_memory(net: str, resolution: int) -> int:
    """Bytes LPIPS needs for one view/anchor pair at ``resolution`` x ``resolution`` (with gradients)."""
    return int(LPIPS_BYTES_PER_PIXEL.get(net, LPIPS_BYTES_PER_PIXEL["vgg"]) * resolution * resolution)


def mesh_memory(mesh_width: int, mesh_height: int) -> int:
    return int(MESH_BYTES_PER_VERTEX * (mesh_width + 1) * mesh_height)


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


def sync_view_count(
    latent_h: int, latent_w: int, window: tuple[int, int], stride: tuple[int, int], circular: bool
) -> int:
    """Number of views of the grid sync_core.views.build_view_grid would build (counted, not built)."""
    from ..sync_core import views as core_views

    rows = len(core_views.axis_offsets(latent_h, window[0], stride[0], False, "height"))
    cols = len(core_views.axis_offsets(latent_w, window[1], stride[1], circular, "width"))
    return rows * cols


def require_view_count(node: str, latent_h: int, latent_w: int, settings) -> int:
    """Refuse grids with more than MAX_SYNC_VIEWS views before anything is allocated."""
    from ..sync_core import views as core_views

    window, stride, _notes = core_views.fit_window(latent_h, latent_w, settings.window, settings.stride)
    count = sync_view_count(latent_h, latent_w, window, stride, settings.circular)
    if count > MAX_SYNC_VIEWS:
        raise input_error(
            node,
            "stride",
            settings.stride[1] * 8,
            f"gives {count} views over a {latent_w * 8}x"
            f"{latent_h * 8} px image (window {settings.window[1] * 8}); the limit is {MAX_SYNC_VIEWS}",
            "raise the stride (a quarter of the window is typical), raise the window, or sample a "
            "smaller image and upscale it",
        )
    return count
