"""Quality measures of a 360 panorama that mean something without real weights (docs/sphere360.md, "Measuring"):
the 0/360 seam, pinching at the poles, and how well the views of a sphere sampler agree.

- ``seam_ratio``: mean |column 0 - column W-1| over the mean |column x - column x+1| elsewhere; about 1 when the
  0/360 join is as smooth as the rest, larger with a seam.
- ``pole_anisotropy``: in the view straight up (or down), the energy of image gradients across the radius
  (tangential) over along it (radial), on an annulus around the pole. Content that was generated as image content
  in the view is about 1 whatever it shows; equirect rows squeezed into circles (a panorama that is not right at
  the poles) read well above 1.
- ``view_consistency``: mean |view - the view rendered from the fused canvas|: 0 when all views agree.
"""

from __future__ import annotations

import torch

from .projection import View, equirect_to_perspective
from .sphere_canvas import SphereCanvas


def seam_ratio(equirect: torch.Tensor) -> float:
    """``equirect`` [B, C, H, W]; the 0/360 column jump relative to the mean neighbouring-column jump."""
    inner = (equirect[..., 1:] - equirect[..., :-1]).abs().mean()
    seam = (equirect[..., 0] - equirect[..., -1]).abs().mean()
    return float(seam / inner.clamp_min(1e-12))


def pole_anisotropy(equirect: torch.Tensor, pole: str = "up", size: int = 128, fov_deg: float = 90.0) -> float:
    """Tangential over radial gradient energy in the pole view, on radii from 10% to 90% of the half-size."""
    pitch = {"up": 90.0, "down": -90.0}[pole]
    view = equirect_to_perspective(equirect.float(), View(0.0, pitch, fov_deg, (size, size))).mean(dim=1)
    gy = view[:, 2:, 1:-1] - view[:, :-2, 1:-1]
    gx = view[:, 1:-1, 2:] - view[:, 1:-1, :-2]
    coords = torch.arange(1, size - 1, dtype=view.dtype) + 0.5 - size / 2
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    radius = torch.sqrt(x**2 + y**2)
    ring = (radius > 0.1 * size / 2) & (radius < 0.9 * size / 2)
    ux, uy = x / radius.clamp_min(1e-9), y / radius.clamp_min(1e-9)
    radial = gx * ux + gy * uy
    tangential = -gx * uy + gy * ux
    return float((tangential[:, ring] ** 2).mean() / (radial[:, ring] ** 2).mean().clamp_min(1e-12))


def view_consistency(views: torch.Tensor, canvas: SphereCanvas) -> float:
    """``views`` [V, B, C, h, w] decoded views; mean |view - render(fuse(views))|."""
    return float((canvas.render(canvas.fuse(views)) - views).abs().mean())
