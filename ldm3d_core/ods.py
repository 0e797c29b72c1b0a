"""Omni-directional stereo (ODS) geometry for one equirectangular image plus radial distance.

Closed form in docs/ldm3d_stereo.md; the warps that use it live in ``ods_warp``.

Convention:
    Axes x right, y up, z forward. Azimuth ``alpha = atan2(x, z)`` (+alpha = right, 0 = image centre),
    elevation ``beta = atan2(y, sqrt(x^2 + z^2))``. Pixel centres of an H x W equirect:
    ``alpha(x) = ((x + 0.5)/W - 0.5) * 2 pi`` and ``beta(y) = (0.5 - (y + 0.5)/H) * pi``.
    Eye sign ``s = -1`` (left) or ``+1`` (right); half-baseline ``b = ipd / 2`` in metres.
    A point (alpha, beta, r) seen by eye s lands at
    ``theta = alpha - s * delta`` with ``delta = asin(b_e / (r cos beta)) - delta_c``,
    ``b_e = b * w(beta)`` (pole fade of the baseline) and
    ``phi = atan2(sin beta, sqrt(cos^2 beta - (b_e / r)^2))`` (or ``phi = beta`` when horizontal-only).
    So the **left eye moves content right (+x)**, the right eye left. Points with ``r cos beta <= b_e`` (inside
    the viewing circle) are invisible to that eye. x is always taken modulo W (the 0/360 seam is not an edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EYES = {"left": -1, "right": 1}


@dataclass(frozen=True)
class ODSGeometry:
    """Geometry parameters shared by both eyes (metres, degrees).

    ipd: interpupillary distance (baseline), >= 0; 0 gives the input back.
    convergence: zero-parallax distance, ``math.inf`` = parallel eyes (correct for HMDs).
    pole_from_deg / pole_to_deg: the baseline fades with ``cos`` from full at ``|beta| <= from`` to zero at
        ``|beta| >= to`` (Blender's pole merge). ``from >= 90`` disables the fade.
    horizontal_only: keep each pixel in its row (``phi = beta``).
    """

    ipd: float = 0.064
    convergence: float = math.inf
    pole_from_deg: float = 60.0
    pole_to_deg: float = 75.0
    horizontal_only: bool = False

    def __post_init__(self):
        if not (math.isfinite(self.ipd) and self.ipd >= 0):
            raise ValueError(f"ipd = {self.ipd!r}: must be a finite distance >= 0 in metres")
        if math.isnan(self.convergence) or self.convergence <= 0:
            raise ValueError(f"convergence = {self.convergence!r}: must be > 0 metres or infinity")
        if not (0 <= self.pole_from_deg <= 90 and 0 <= self.pole_to_deg <= 90):
            raise ValueError(f"pole fade {self.pole_from_deg!r}..{self.pole_to_deg!r} deg: both must be in [0, 90]")
        if self.pole_to_deg < self.pole_from_deg:
            raise ValueError(f"pole_to_deg = {self.pole_to_deg!r} must be >= pole_from_deg = {self.pole_from_deg!r}")


def eye_sign(eye: str | int) -> int:
    """'left' -> -1, 'right' -> +1 (ints -1/+1 pass through)."""
    if eye in (-1, 1):
        return int(eye)
    if eye not in EYES:
        raise ValueError(f"eye {eye!r} must be 'left' or 'right'")
    return EYES[eye]


def pixel_beta(
    height: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Elevation of pixel-row centres, [H], radians in (-pi/2, pi/2), row 0 = top."""
    y = torch.arange(height, device=device, dtype=dtype)
    return (0.5 - (y + 0.5) / height) * math.pi


def pole_weight(beta: torch.Tensor, from_deg: float = 60.0, to_deg: float = 75.0) -> torch.Tensor:
    """Baseline fade w(beta) in [0, 1] (Blender pole merge): 1 below ``from``, cos ramp, 0 above ``to``.

    Convention: ``beta`` in radians, any shape; ``from == to`` is a hard step (w = 1 for ``|beta| < from``).
    """
    a = beta.abs()
    b0, b1 = math.radians(from_deg), math.radians(to_deg)
    if b1 <= b0:
        return (a < b0).to(beta.dtype)
    ramp = torch.cos(0.5 * math.pi * (a - b0) / (b1 - b0))
    return torch.where(a <= b0, torch.ones_like(a), torch.where(a >= b1, torch.zeros_like(a), ramp))


def ods_angles(
    r: torch.Tensor, eye: str | int, geom: ODSGeometry, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pixel ODS angles for the source grid of an equirect distance map.

    Args:
        r: [H, W] radial distance in metres (>= 0, ``inf`` allowed).
        eye: 'left' / 'right' (or -1 / +1).
        geom: ``ODSGeometry``.
        dtype: computation dtype (float64 here; the warps use float32, exact enough for the rounding).

    Returns:
        (delta, phi, visible): ``delta`` [H, W] radians, the signed azimuth offset before the eye sign
        (``theta = alpha - s * delta``); ``phi`` [H, W] the new elevation; ``visible`` [H, W] bool.

    Convention: see the module docstring. ``|delta| <= pi/2``; no NaN for any r >= 0 including inf.
    """
    eye_sign(eye)
    height = r.shape[-2]
    rr = r.to(dtype).abs()
    beta = pixel_beta(height, r.device, dtype)[:, None]
    cosb, sinb = torch.cos(beta), torch.sin(beta)
    be = 0.5 * geom.ipd * pole_weight(beta, geom.pole_from_deg, geom.pole_to_deg)  # [H, 1]
    # b_e / rho: 0 at the poles (b_e = 0, also for r = 0) and for r = inf; inf for rho = 0 < b_e
    ratio = torch.nan_to_num(be / (rr * cosb), nan=0.0, posinf=math.inf)
    visible = ratio < 1
    delta = torch.asin(ratio.clamp(0.0, 1.0))
    if math.isfinite(geom.convergence):
        delta = delta - torch.asin((be / (geom.convergence * cosb)).clamp(0.0, 1.0))
    if geom.horizontal_only:
        phi = beta.expand_as(rr)
    else:
        q = torch.nan_to_num(be / rr, nan=0.0, posinf=math.inf)  # b_e / r, 0 for r = inf
        phi = torch.atan2(sinb.expand_as(rr), torch.sqrt((cosb * cosb - q * q).clamp_min(0.0)))
    return delta, phi, visible


def ods_shift_px(
    r: torch.Tensor, eye: str | int, geom: ODSGeometry, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-source-pixel displacement in pixels: ``(dx, dy, visible)``, each [H, W].

    Convention: ``dx = -s * delta * W / (2 pi)`` (positive = to the right, not wrapped),
    ``dy = (beta - phi) * H / pi`` (positive = down, i.e. toward larger row index).
    """
    s = eye_sign(eye)
    height, width = r.shape[-2:]
    delta, phi, visible = ods_angles(r, s, geom, dtype)
    dx = (-s * width / (2.0 * math.pi)) * delta
    beta = pixel_beta(height, r.device, dtype)[:, None]
    dy = (beta - phi) * (height / math.pi)
    return dx, dy, visible


def equator_shift_px(distance: float, ipd: float, width: int) -> float:
    """Per-eye horizontal shift at the equator for a point at ``distance`` metres (docs/ldm3d_stereo.md)."""
    return math.asin(min(0.5 * ipd / distance, 1.0)) * width / (2.0 * math.pi)


def disparity_px(r: torch.Tensor, geom: ODSGeometry, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Binocular disparity per source pixel in pixels: left-eye ``dx`` minus right-eye ``dx`` (see ``ods_shift_px``).

    Convention: ``r`` [H, W] metres (>= 0, ``inf`` allowed); result [H, W] of ``dtype`` on ``r``'s device,
    ``disparity = 2 * delta * W / (2 pi) = delta * W / pi`` (the eyes are mirror images). Positive = nearer
    than the convergence distance; 0 for points at ``convergence`` (or at infinity with parallel eyes) and at the
    poles. Pixels inside the viewing circle get ``delta = pi/2 - delta_c`` (as in ``ods_angles``).
    """
    delta, _, _ = ods_angles(r, "left", geom, dtype)
    return delta * (r.shape[-1] / math.pi)


def disparity_preview(r: torch.Tensor, geom: ODSGeometry) -> torch.Tensor:
    """``disparity_px`` as a float32 greyscale in [0, 1]: ``0.5 + 0.5 * d / max|d|`` ([H, W]).

    Mid grey = zero parallax, white = the largest positive (nearest) disparity; an all-zero disparity is
    uniform mid grey.
    """
    disp = disparity_px(r, geom, torch.float32)
    scale = disp.abs().max().clamp_min(1e-12)
    return 0.5 + 0.5 * disp / scale
