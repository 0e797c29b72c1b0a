"""View grids, crops and MultiDiffusion averaging over latent tensors (pure torch).

Convention:
    - All sizes and positions are in latent units (pixels // 8 for SD1/2/XL). Tensors are ``[..., H, W]``
      (rows, then columns); a view covers rows ``top .. top+height-1`` and columns ``left .. left+width-1``.
    - Views are listed row-major (rows outer, columns inner), exactly like the official SyncDiffusion /
      MultiDiffusion ``get_views``; positions along an axis are ``0, s, 2s, ...``. When ``(size - window) % s != 0``
      one extra view flush with the far border is added (the official code asserts divisibility instead; the
      result is identical whenever the official assertion holds), so no latent position is ever left uncovered.
    - Circular (horizontal wrap, for 360 panoramas): column offsets are ``floor(k * W / n)`` for
      ``k = 0 .. n-1`` with ``n = ceil(W / s)``; that is exactly ``0, s, 2s, ...`` when ``W % s == 0``, and otherwise
      the offsets are spread evenly (gaps of ``floor(W/n)`` or ``ceil(W/n) <= s``). Every view has the full window
      width; ``left + width`` may exceed ``W``, in which case the view wraps over the right edge to column 0.
      Rows never wrap.
    - All views of one grid have the same size (window), so they can be batched with :func:`crop_views`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "View",
    "build_view_grid",
    "axis_offsets",
    "anchor_index",
    "crop_view",
    "crop_views",
    "add_view",
    "add_views",
    "coverage_count",
    "average_views",
    "view_slices_wrap",
    "view_batches",
]


@dataclass(frozen=True)
class View:
    """One window of the panorama latent, in latent units (see the module ``Convention:``)."""

    top: int
    left: int
    height: int
    width: int

    @property
    def bottom(self) -> int:
        return self.top + self.height

    @property
    def right(self) -> int:
        """Exclusive right edge; may exceed the latent width for wrapping (circular) views."""
        return self.left + self.width

    def wraps(self, latent_w: int) -> bool:
        return self.left + self.width > latent_w


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {value!r}")
        a, b = value
    else:
        a = b = value
    try:
        if isinstance(a, bool) or isinstance(b, bool):
            raise TypeError
        return operator.index(a), operator.index(b)
    except TypeError:
        raise ValueError(f"{name} must be integer(s), got {value!r}") from None


def axis_offsets(size: int, window: int, stride: int, circular: bool = False, axis: str = "width") -> list[int]:
    """Start offsets of the windows along one axis (see the module ``Convention:``).

    Raises ValueError for ``stride <= 0``, ``stride > window``, ``window <= 0`` or ``window > size``.
    """
    if size <= 0:
        raise ValueError(f"latent {axis} must be positive, got {size}")
    if window <= 0:
        raise ValueError(f"window {axis} must be positive, got {window}")
    if stride <= 0:
        raise ValueError(f"stride ({axis}) must be positive, got {stride}")
    if stride > window:
        raise ValueError(
            f"stride ({axis}) {stride} is larger than the window {window}: views would leave gaps; "
            f"use a stride <= window"
        )
    if window > size:
        raise ValueError(
            f"window ({axis}) {window} is larger than the latent {axis} {size}; use a window <= {size} "
            f"(or a larger image)"
        )
    if circular:
        n = math.ceil(size / stride)
        return [(k * size) // n for k in range(n)]
    offsets = list(range(0, size - window + 1, stride))
    if offsets[-1] + window < size:
        offsets.append(size - window)
    return offsets


def build_view_grid(
    latent_h: int, latent_w: int, window: int | tuple[int, int], stride: int | tuple[int, int], circular: bool = False
) -> list[View]:
    """All views of a panorama latent of ``latent_h x latent_w``, row-major (official order).

    ``window`` / ``stride``: int, or ``(height, width)`` pairs, in latent units. ``circular`` wraps columns only.
    Example (official): 512x2048 px -> latent 64x256, window 64, stride 16 -> 13 views, the middle one (index 6)
    covers columns [96, 160).
    """
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    rows = axis_offsets(int(latent_h), wh, sh, circular=False, axis="height")
    cols = axis_offsets(int(latent_w), ww, sw, circular=circular, axis="width")
    return [View(r, c, wh, ww) for r in rows for c in cols]


def anchor_index(views: Sequence[View], anchor: str | int = "middle") -> int:
    """Index of the anchor view: ``"middle"`` = ``len(views)//2`` (official), ``"first"`` = 0, ``"last"``, or an int."""
    n = len(views)
    if n == 0:
        raise ValueError("no views: cannot choose an anchor")
    if isinstance(anchor, str):
        key = anchor.strip().lower()
        if key in ("middle", "center", "centre"):
            return n // 2
        if key == "first":
            return 0
        if key == "last":
            return n - 1
        raise ValueError(f"anchor must be 'middle', 'first', 'last' or a view index, got {anchor!r}")
    if isinstance(anchor, bool) or not isinstance(anchor, int):
        raise ValueError(f"anchor must be 'middle', 'first', 'last' or a view index, got {anchor!r}")
    if not 0 <= anchor < n:
        raise ValueError(f"anchor index {anchor} is out of range: there are {n} views (0..{n - 1})")
    return anchor


def view_slices_wrap(view: View, latent_h: int, latent_w: int) -> tuple[slice | Tensor, slice | Tensor]:
    """``(rows, cols)``: ``slice`` objects when the view does not wrap on that axis, else index tensors (CPU, long)."""
    if view.top < 0 or view.left < 0 or view.height <= 0 or view.width <= 0:
        raise ValueError(f"invalid view {view}")
    if view.height > latent_h or view.width > latent_w:
        raise ValueError(f"view {view} is larger than the latent ({latent_h}x{latent_w})")
    if view.bottom <= latent_h:
        rows = slice(view.top, view.bottom)
    else:
        rows = torch.arange(view.top, view.bottom) % latent_h
    if view.right <= latent_w:
        cols = slice(view.left, view.right)
    else:
        cols = torch.arange(view.left, view.right) % latent_w
    return rows, cols


def crop_view(x: Tensor, view: View) -> Tensor:
    """``x[..., view]``: ``[..., H, W] -> [..., h, w]``. A plain slice (no copy) unless the view wraps, then an
    ``index_select`` of the needed rows/columns only. Differentiable."""
    h, w = x.shape[-2], x.shape[-1]
    rows, cols = view_slices_wrap(view, h, w)
    out = x
    if isinstance(rows, slice):
        out = out[..., rows, :]
    else:
        out = out.index_select(out.dim() - 2, rows.to(out.device))
    if isinstance(cols, slice):
        out = out[..., cols]
    else:
        out = out.index_select(out.dim() - 1, cols.to(out.device))
    return out


def view_batches(n_views: int, batch_size: int, skip: Sequence[int] = ()) -> list[list[int]]:
    """View indices ``0..n_views-1`` (minus ``skip``) in consecutive chunks of at most ``batch_size``."""
    if batch_size < 1:
        raise ValueError(f"view batch size must be >= 1, got {batch_size}")
    ids = [i for i in range(n_views) if i not in set(skip)]
    return [ids[k : k + batch_size] for k in range(0, len(ids), batch_size)]


def crop_views(x: Tensor, views: Sequence[View]) -> Tensor:
    """Stack the crops of equal-size views: ``[..., H, W] -> [V, ..., h, w]``."""
    if len(views) == 0:
        raise ValueError("crop_views needs at least one view")
    sizes = {(v.height, v.width) for v in views}
    if len(sizes) != 1:
        raise ValueError(f"crop_views needs views of equal size, got sizes {sorted(sizes)}")
    return torch.stack([crop_view(x, v) for v in views], dim=0)


def add_view(acc: Tensor, tile: Tensor, view: View) -> None:
    """In place ``acc[..., view] += tile`` (wrap-aware; repeated wrapped indices accumulate)."""
    h, w = acc.shape[-2], acc.shape[-1]
    if tuple(tile.shape[-2:]) != (view.height, view.width):
        raise ValueError(f"tile of shape {tuple(tile.shape)} does not match view {view}")
    rows, cols = view_slices_wrap(view, h, w)
    tile = tile.to(dtype=acc.dtype, device=acc.device)
    if isinstance(rows, slice) and isinstance(cols, slice):
        acc[..., rows, cols] += tile
        return
    if isinstance(rows, slice):
        acc[..., rows, :].index_add_(acc.dim() - 1, cols.to(acc.device), tile)
        return
    # Rows wrap (not produced by build_view_grid, supported for completeness): scatter row by row.
    rows = rows.tolist()
    for k, r in enumerate(rows):
        target = acc[..., r : r + 1, :]
        piece = tile[..., k : k + 1, :]
        if isinstance(cols, slice):
            target[..., cols] += piece
        else:
            target.index_add_(target.dim() - 1, cols.to(acc.device), piece)


def add_views(acc: Tensor, tiles: Tensor | Sequence[Tensor], views: Sequence[View]) -> None:
    """In place ``acc[..., v] += tiles[i]`` for every view ``v = views[i]``."""
    if len(tiles) != len(views):
        raise ValueError(f"{len(tiles)} tiles for {len(views)} views")
    for tile, view in zip(tiles, views):
        add_view(acc, tile, view)


def coverage_count(
    views: Sequence[View],
    latent_h: int,
    latent_w: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``[H, W]``: how many views cover each latent position."""
    count = torch.zeros(latent_h, latent_w, device=device, dtype=dtype or torch.float32)
    one = torch.ones((), device=device, dtype=count.dtype)
    for v in views:
        add_view(count, one.expand(v.height, v.width), v)
    return count


def average_views(tiles: Tensor | Sequence[Tensor], views: Sequence[View], latent_h: int, latent_w: int) -> Tensor:
    """MultiDiffusion merge: ``value / count`` of the tiles placed at their views -> ``[..., H, W]``.

    ``tiles``: a sequence of ``[..., h, w]`` tensors (or a stacked ``[V, ..., h, w]`` tensor). Positions covered
    by no view (impossible with :func:`build_view_grid`) stay 0, as in the official ``torch.where(count > 0, ...)``.
    """
    if len(tiles) != len(views) or len(views) == 0:
        raise ValueError(f"{len(tiles)} tiles for {len(views)} views")
    first = tiles[0]
    value = torch.zeros(*first.shape[:-2], latent_h, latent_w, device=first.device, dtype=first.dtype)
    add_views(value, tiles, views)
    count = coverage_count(views, latent_h, latent_w, device=first.device, dtype=first.dtype)
    return torch.where(count > 0, value / count.clamp_min(1), value)


def fit_window(
    latent_h: int, latent_w: int, window: tuple[int, int], stride: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int], list[str]]:
    """Clamp a ``(height, width)`` window that is larger than the latent on an axis to that axis's size (and its
    stride to the clamped window). Returns ``(window, stride, notes)``; ``notes`` names each clamped axis."""
    notes, wins, strides = [], [], []
    for axis, size, win, step in (
        ("height", latent_h, window[0], stride[0]),
        ("width", latent_w, window[1], stride[1]),
    ):
        if win > size:
            notes.append(f"window {axis} {win} > latent {axis} {size}: clamped to {size}")
            win = size
        wins.append(win)
        strides.append(min(step, win))
    return (wins[0], wins[1]), (strides[0], strides[1]), notes
