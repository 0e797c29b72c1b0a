"""Normalised depth map D in [0, 1] -> radial distance r in metres from the rig centre.

Convention:
    D is a float tensor of any shape (usually [H, W]) with values in [0, 1]. For LDM3D, MiDaS/DPT and
    DepthAnything-relative maps, **white (D = 1) is near** (disparity-like, docs/ldm3d_stereo.md).
    Modes (section 4.2), applied after the optional inversion ``D -> 1 - D``:

    ===================  ==========================================  ======================================
    ``inverse``          ``1/r = D/near + (1 - D)/far``              far may be ``math.inf``: ``r = near/D``
    ``linear``           ``r = near + (1 - D)(far - near)``          linear depth; far must be finite
    ``metric``           ``r = D * scale``                           metric depth stored as D = r / scale
    ``sphere_displace``  ``r = radius - displacement * D``           THREE.6DOF / DepthFusion (6 m, 4 m)
    ===================  ==========================================  ======================================

    ``inverse`` with ``far = inf`` maps D = 0 to ``r = inf`` (a point at infinity: zero parallax). ``metric``
    maps D = 0 to r = 0 (inside every viewing circle: such points become holes in ODS). The result has the
    dtype of the input (promoted to float32 at least) and the same device.
"""

from __future__ import annotations

import math

import torch

DEPTH_MODES = ("inverse", "linear", "metric", "sphere_displace")


def _check_positive(name: str, value: float, allow_inf: bool = False) -> float:
    value = float(value)
    if math.isnan(value) or value <= 0 or (math.isinf(value) and not allow_inf):
        allowed = "a positive number or infinity" if allow_inf else "a positive finite number"
        raise ValueError(f"{name} = {value!r}: must be {allowed}")
    return value


def depth_to_distance(depth: torch.Tensor, mode: str = "inverse", near: float = 1.0, far: float = math.inf,
                      invert: bool = False, scale: float = 10.0, radius: float = 6.0,
                      displacement: float = 4.0) -> torch.Tensor:
    """Map a normalised depth map to radial distance in metres (see the module Convention block).

    Args:
        depth: D in [0, 1], any shape. Values outside [0, 1] are clamped; NaN/inf raise.
        mode: one of ``DEPTH_MODES``.
        near, far: metres, ``0 < near < far``; ``far`` may be ``math.inf`` in ``inverse`` mode.
        invert: use ``1 - D`` (for maps where white = far).
        scale: metres per unit of D in ``metric`` mode.
        radius, displacement: ``sphere_displace`` parameters; ``radius > displacement >= 0``.

    Returns:
        r, same shape as ``depth``, float (>= float32), metres; may hold ``inf`` (inverse, far = inf).
    """
    if mode not in DEPTH_MODES:
        raise ValueError(f"depth mode {mode!r} is not one of {DEPTH_MODES}")
    if not torch.isfinite(depth).all():
        raise ValueError("depth contains NaN or inf values")
    d = depth if depth.is_floating_point() else depth.float()
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()
    d = d.clamp(0.0, 1.0)
    if invert:
        d = 1.0 - d
    if mode == "inverse":
        near = _check_positive("near", near)
        far = _check_positive("far", far, allow_inf=True)
        if far <= near:
            raise ValueError(f"far = {far!r} must be larger than near = {near!r}")
        inv = d / near + (1.0 - d) * (0.0 if math.isinf(far) else 1.0 / far)
        return torch.where(inv > 0, 1.0 / inv.clamp_min(torch.finfo(inv.dtype).tiny), torch.full_like(inv, math.inf))
    if mode == "linear":
        near = _check_positive("near", near)
        far = _check_positive("far", far)
        if far <= near:
            raise ValueError(f"far = {far!r} must be larger than near = {near!r}")
        return near + (1.0 - d) * (far - near)
    if mode == "metric":
        scale = _check_positive("scale", scale)
        return d * scale
    radius = _check_positive("radius", radius)
    displacement = float(displacement)
    if not (0.0 <= displacement < radius):
        raise ValueError(f"displacement = {displacement!r} must be in [0, radius = {radius!r})")
    return radius - displacement * d


def near_for_max_disparity(ipd: float, max_disparity_px: float, width: int) -> float:
    """``inverse_by_disparity`` helper: the near distance whose per-eye equator shift is ``max_disparity_px``.

    Convention: ``delta_max = px * 2 pi / W`` and ``near = (ipd / 2) / sin(delta_max)`` (docs/ldm3d_stereo.md); use with
    ``far = inf``.
    """
    ipd = _check_positive("ipd", ipd)
    max_disparity_px = _check_positive("max_disparity_px", max_disparity_px)
    delta = max_disparity_px * 2.0 * math.pi / width
    if delta >= math.pi / 2:
        raise ValueError(f"max_disparity_px = {max_disparity_px!r} is a quarter turn or more at width {width}")
    return 0.5 * ipd / math.sin(delta)
