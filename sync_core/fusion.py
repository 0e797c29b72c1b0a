"""How overlapping view predictions are fused into one panorama (pure torch): MultiDiffusion, Mixture of Diffusers,
SpotDiffusion-style shifted grids.

Convention:
    - Sizes and positions in latent units; tensors ``[..., H, W]``; views as in :mod:`sync_core.views` (row-major,
      columns may wrap when circular).
    - ``uniform`` (MultiDiffusion, the SyncDiffusion paper): the fused value at a position is the plain mean of the
      views covering it.
    - ``gaussian`` (Mixture of Diffusers): each view's prediction is weighted by a separable Gaussian over the view,
      ``g(t, mid, n) = exp(-(t - mid)^2 / n^2 / (2 var)) / sqrt(2 pi var)`` with ``var = 0.01``,
      ``mid = (width - 1) / 2`` on columns and ``mid = height / 2`` on rows (the Mixture of Diffusers reference
      code, also used by ComfyUI-TiledDiffusion), ``n`` = that axis's size (TiledDiffusion uses the width for both
      axes; the two agree for square views). Fused value = sum(w * x) / sum(w).
    - ``spot`` (SpotDiffusion): at sampling step ``i`` the grid is shifted by ``(dy_i, dx_i)``, each uniform in
      ``[0, stride)`` and drawn from ``torch.Generator().manual_seed(seed)`` (rows first, then columns, one pair
      per step). A circular x axis rolls the grid (views wrap, as in SpotDiffusion's ``torch.roll``). A plain axis
      uses the infinite lattice ``shift + k * stride`` (k any integer) of windows, keeps those that meet the image
      and crops them to it; a cropped window is evaluated as the full window clamped inside the image
      (``clamp(o, 0, size - window)``, so every evaluated view has the window size and never mixes opposite
      borders) but contributes only on its cropped part. Lattice windows sharing an evaluated view add their 0/1
      masks into that view's weight (a per-view weight ``[h, w]``, the outer product of the row and column masks);
      fusion is ``sum(w * x) / sum(w)``. Every interior border is a lattice border ``shift + k * stride`` or
      ``shift + k * stride + window``, so all of them move with the shift: no border stays fixed over the steps
      (the old clamped grid kept them at ``window`` and ``size - window``). Per axis this evaluates at most one
      view more than the unshifted grid (docs/syncdiffusion.md has the measured cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .views import View, add_view, axis_offsets

FUSIONS = ("uniform", "gaussian", "spot")
GAUSSIAN_VAR = 0.01

__all__ = [
    "FUSIONS",
    "check_fusion",
    "gaussian_weights",
    "spot_shifts",
    "spot_axis",
    "spot_grid",
    "weighted_average",
    "weight_sum",
]


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    return fusion


def _gauss_1d(n: int, midpoint: float, var: float) -> Tensor:
    t = torch.arange(n, dtype=torch.float64)
    return torch.exp(-((t - midpoint) ** 2) / (n * n) / (2 * var)) / math.sqrt(2 * math.pi * var)


def gaussian_weights(
    height: int,
    width: int,
    var: float = GAUSSIAN_VAR,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Mixture-of-Diffusers weights ``[height, width]`` (see the module Convention); strictly positive."""
    if height <= 0 or width <= 0:
        raise ValueError(f"view size must be positive, got {height}x{width}")
    w = torch.outer(_gauss_1d(height, height / 2, var), _gauss_1d(width, (width - 1) / 2, var))
    return w.to(device=device, dtype=dtype)


def spot_shifts(seed: int, steps: int, stride: tuple[int, int]) -> list[tuple[int, int]]:
    """One ``(dy, dx)`` per step, each in ``[0, stride)`` (module Convention). Deterministic for a seed."""
    generator = torch.Generator().manual_seed(int(seed) % (2**63))
    dy = torch.randint(0, max(1, int(stride[0])), (steps,), generator=generator)
    dx = torch.randint(0, max(1, int(stride[1])), (steps,), generator=generator)
    return list(zip(dy.tolist(), dx.tolist()))


def spot_axis(size: int, window: int, stride: int, shift: int, circular: bool = False) -> list[tuple[int, Tensor]]:
    """One axis of the step's spot grid: ``(offset, mask)`` per evaluated view, ``mask`` ``[window]`` float64 counts
    of the lattice windows it stands for (module Convention); offsets ascending, distinct."""
    if circular:
        return [
            ((o + shift) % size, torch.ones(window, dtype=torch.float64))
            for o in axis_offsets(size, window, stride, True)
        ]
    axis_offsets(size, window, stride)  # validates the geometry
    masks: dict[int, Tensor] = {}
    o = shift % stride - stride * math.ceil(window / stride)
    while o < size:
        if o + window > 0:
            at = min(max(o, 0), size - window)
            mask = masks.setdefault(at, torch.zeros(window, dtype=torch.float64))
            mask[max(o, 0) - at : min(o + window, size) - at] += 1
        o += stride
    return sorted(masks.items(), key=lambda item: item[0])


def spot_grid(
    latent_h: int,
    latent_w: int,
    window: tuple[int, int],
    stride: tuple[int, int],
    shift: tuple[int, int],
    circular: bool = False,
) -> tuple[list[View], Tensor]:
    """The step's spot grid for ``shift = (dy, dx)``: views (row-major) and their weights ``[V, h, w]`` float32."""
    rows = spot_axis(latent_h, window[0], stride[0], shift[0], circular=False)
    cols = spot_axis(latent_w, window[1], stride[1], shift[1], circular=circular)
    views = [View(r, c, window[0], window[1]) for r, _ in rows for c, _ in cols]
    weights = torch.stack([torch.outer(mr, mc) for _, mr in rows for _, mc in cols]).float()
    return views, weights


def weight_sum(views: Sequence[View], weights: Tensor, latent_h: int, latent_w: int) -> Tensor:
    """``[H, W]``: the sum of the per-view weight maps (``weights`` ``[h, w]`` for every view, or ``[V, h, w]``)."""
    total = torch.zeros(latent_h, latent_w, device=weights.device, dtype=weights.dtype)
    for k, v in enumerate(views):
        add_view(total, weights[k] if weights.dim() == 3 else weights, v)
    return total


def weighted_average(
    tiles: Tensor | Sequence[Tensor], views: Sequence[View], weights: Tensor | None, latent_h: int, latent_w: int
) -> Tensor:
    """Fuse view tiles ``[..., h, w]`` into ``[..., H, W]``: ``sum(w * tile) / sum(w)``; ``weights=None`` is the
    uniform (MultiDiffusion) mean, ``[V, h, w]`` one map per view. Positions no view covers stay 0."""
    if len(tiles) != len(views) or len(views) == 0:
        raise ValueError(f"{len(tiles)} tiles for {len(views)} views")
    first = tiles[0]
    ones = torch.ones(views[0].height, views[0].width, device=first.device, dtype=first.dtype)
    w = ones if weights is None else weights.to(device=first.device, dtype=first.dtype)
    value = torch.zeros(*first.shape[:-2], latent_h, latent_w, device=first.device, dtype=first.dtype)
    for k, (tile, view) in enumerate(zip(tiles, views)):
        wk = w[k] if w.dim() == 3 else w
        add_view(value, tile * wk if weights is not None else tile, view)
    total = weight_sum(views, w, latent_h, latent_w)
    return torch.where(total > 0, value / torch.where(total > 0, total, torch.ones_like(total)), value)
