"""View layouts that cover the whole sphere with overlap (docs/sphere360.md), for joint diffusion on a 360 canvas.

A layout is a list of ``projection.View``. "Covers with overlap o" means: every direction is seen by at least one
view whose field of view is shrunk by the fraction o (``covers``), so the full-size views of neighbours share a band
of about o x half the field of view, and every equirect pixel is seen by >= 1 view.
"""

from __future__ import annotations

import math

from .projection import View, coverage

CHECK_SIZE = (90, 180)  # equirect grid (1 pixel = 2 degrees) on which layouts are checked


def covers(views: list[View], overlap: float, grid: tuple[int, int] = CHECK_SIZE) -> bool:
    """True when the views, each with its field of view shrunk by ``overlap``, still see every grid pixel."""
    return bool((coverage(_shrunk(views, overlap), *grid) >= 1).all())


def _shrunk(views: list[View], overlap: float) -> list[View]:
    """The views with the half-angle tangent of their FOV scaled by (1 - overlap): overlap measured on the image."""
    return [
        View(v.yaw, v.pitch, math.degrees(2 * math.atan((1 - overlap) * math.tan(math.radians(v.fov_deg) / 2))),
             v.size, v.roll)
        for v in views
    ]  # fmt: skip


def ring_layout(size: tuple[int, int], fov_deg: float = 72.0, overlap: float = 0.25) -> list[View]:
    """A horizon ring, rings evenly spaced in elevation above and below it, and one view at each pole; each ring
    gets the fewest views (checked on ``CHECK_SIZE``) for the layout to ``cover`` the sphere. Rings alternate their
    yaw offset by half a step. ``size`` is the views' (height, width); ``fov_deg`` the horizontal FOV."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap = {overlap!r}: must be in [0, 1)")
    inner = _shrunk([View(0, 0, fov_deg, size)], overlap)[0].fov_deg  # the part of a view that must tile the sphere
    vertical = inner * min(1.0, size[0] / size[1])
    rings = math.ceil(90 / vertical)  # horizon + rings per hemisphere; the pole view closes the cap
    elevations = [90 * k / rings for k in range(rings)]
    counts = [max(3, math.ceil(360 * math.cos(math.radians(e)) / inner)) for e in elevations]
    for _ in range(64):
        layout = _layout(elevations, counts, fov_deg, size)
        uncovered = coverage(_shrunk(layout, overlap), *CHECK_SIZE) < 1
        if not uncovered.any():
            return layout
        rows = uncovered.any(dim=1).nonzero().flatten().double()
        worst = (90 - (rows + 0.5) * 180 / CHECK_SIZE[0]).abs()  # |elevation| of the uncovered rows
        for e in worst.unique():  # grow the sparser of the (at most two) rings next to the gap
            nearest = sorted(range(len(elevations)), key=lambda k: abs(elevations[k] - e))
            near = [k for k in nearest[:2] if abs(elevations[k] - e) <= 90 / rings] or nearest[:1]
            counts[min(near, key=lambda k: counts[k] / math.cos(math.radians(elevations[k])))] += 1
    raise ValueError(f"no ring layout covers the sphere with fov {fov_deg} and overlap {overlap}")


def _layout(elevations: list[float], counts: list[int], fov_deg: float, size: tuple[int, int]) -> list[View]:
    views = []
    for k, (elevation, count) in enumerate(zip(elevations, counts)):
        for sign in (1, -1) if elevation else (1,):
            step = 360 / count
            views += [
                View(((i + 0.5 * (k % 2)) * step + 180) % 360 - 180, sign * elevation, fov_deg, size)
                for i in range(count)
            ]
    return views + [View(0.0, 90.0, fov_deg, size), View(0.0, -90.0, fov_deg, size)]


def cube_layout(size: tuple[int, int], fov_deg: float = 90.0) -> list[View]:
    """The six cube faces plus eight views on the cube's corners (pitch +-35.26 deg, yaw 45 + 90 k): every face
    seam and corner lies inside another view. Meant for models whose native window sees about 90 degrees."""
    corner = math.degrees(math.atan(1 / math.sqrt(2)))
    faces = [
        View(0, 0, fov_deg, size), View(90, 0, fov_deg, size), View(180, 0, fov_deg, size),
        View(-90, 0, fov_deg, size), View(0, 90, fov_deg, size), View(0, -90, fov_deg, size),
    ]  # fmt: skip
    corners = [View(45 + 90 * k - (360 if 45 + 90 * k > 180 else 0), s * corner, fov_deg, size) for s in (1, -1)
               for k in range(4)]  # fmt: skip
    return faces + corners
