"""Normalised depth map D in [0, 1] -> radial distance r in metres from the rig centre.

Convention:
    D is a float tensor of any shape (usually [H, W]) with values in [0, 1]. For LDM3D, MiDaS/DPT and
    DepthAnything-relative maps, **white (D = 1) is near** (disparity-like, docs/ldm3d_stereo.md).
    Modes (section 4.2), applied after the optional inversion ``D -> 1 - D`` (``DepthMapping`` holds the mode
    and its parameters, validated once when it is built):

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
from dataclasses import dataclass

import torch

DEPTH_MODES = ("inverse", "linear", "metric", "sphere_displace")


class DepthMappingError(ValueError):
    """A ``DepthMapping`` parameter is invalid; ``field`` names the parameter and ``value`` holds what was given."""

    def __init__(self, field: str, value: object, problem: str):
        super().__init__(f"{field} = {value!r}: {problem}")
        self.field = field
        self.value = value
        self.problem = problem


@dataclass(frozen=True)
class DepthMapping:
    """How a normalised depth map D in [0, 1] becomes radial distance r in metres (see the module Convention).

    mode: one of ``DEPTH_MODES``.
    near, far: metres; ``inverse`` and ``linear`` need ``0 < near < far``; ``far`` may be ``math.inf`` in
        ``inverse`` mode only (D = 0 is then a point at infinity).
    invert: use ``1 - D`` (for maps where white = far).
    scale: metres per unit of D in ``metric`` mode, > 0.
    radius, displacement: ``sphere_displace``: ``r = radius - displacement * D`` with ``radius > displacement >= 0``.

    Every number must be a real number (no NaN; only ``far`` may be infinite). Parameters the chosen mode does not
    use are checked for that only. Invalid values raise ``DepthMappingError`` (a ``ValueError``) naming the field.
    """

    mode: str = "inverse"
    near: float = 1.0
    far: float = math.inf
    invert: bool = False
    scale: float = 10.0
    radius: float = 6.0
    displacement: float = 4.0

    def __post_init__(self) -> None:
        if self.mode not in DEPTH_MODES:
            raise DepthMappingError("mode", self.mode, f"is not one of {DEPTH_MODES}")
        if not isinstance(self.invert, bool):
            raise DepthMappingError("invert", self.invert, "must be True or False")
        for name in ("near", "far", "scale", "radius", "displacement"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise DepthMappingError(name, value, "must be a number")
            if math.isinf(value) and not (name == "far" and value > 0):
                raise DepthMappingError(name, value, "must be finite" + (" or +infinity" if name == "far" else ""))
        mode, near, far = self.mode, self.near, self.far
        if mode in ("inverse", "linear"):
            if near <= 0:
                raise DepthMappingError("near", near, "must be > 0 metres")
            if math.isinf(far) and mode == "linear":
                raise DepthMappingError("far", far, "linear mode needs a finite far distance")
            if far <= near:
                raise DepthMappingError("far", far, f"must be larger than near = {near!r}")
        elif mode == "metric" and self.scale <= 0:
            raise DepthMappingError("scale", self.scale, "must be > 0 metres")
        elif mode == "sphere_displace":
            if self.radius <= 0:
                raise DepthMappingError("radius", self.radius, "must be > 0 metres")
            if not 0 <= self.displacement < self.radius:
                raise DepthMappingError(
                    "displacement", self.displacement, f"must be >= 0 and smaller than radius = {self.radius!r}"
                )


def depth_to_distance(depth: torch.Tensor, mapping: DepthMapping = DepthMapping()) -> torch.Tensor:
    """Map a normalised depth map to radial distance in metres (see the module Convention block).

    Args:
        depth: D in [0, 1], any shape. Values outside [0, 1] are clamped; NaN/inf raise ValueError.
        mapping: a validated ``DepthMapping`` (mode and its parameters).

    Returns:
        r, same shape as ``depth``, float (>= float32), metres; may hold ``inf`` (inverse, far = inf).
    """
    if not isinstance(mapping, DepthMapping):
        raise TypeError(f"mapping must be a DepthMapping, got {type(mapping).__name__}")
    if not torch.isfinite(depth).all():
        raise ValueError("depth contains NaN or inf values")
    d = depth if depth.is_floating_point() else depth.float()
    if d.dtype in (torch.float16, torch.bfloat16):
        d = d.float()
    d = d.clamp(0.0, 1.0)
    if mapping.invert:
        d = 1.0 - d
    mode = mapping.mode
    if mode == "inverse":
        inv = d / mapping.near + (1.0 - d) * (0.0 if math.isinf(mapping.far) else 1.0 / mapping.far)
        return torch.where(inv > 0, 1.0 / inv.clamp_min(torch.finfo(inv.dtype).tiny), torch.full_like(inv, math.inf))
    if mode == "linear":
        return mapping.near + (1.0 - d) * (mapping.far - mapping.near)
    if mode == "metric":
        return d * mapping.scale
    return mapping.radius - mapping.displacement * d


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} = {value!r}: must be a positive finite number")
    return value


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
