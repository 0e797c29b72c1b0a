"""Stereo 360 disocclusion filling with one background layer shared by both eyes (pure torch).

The forward warp (ods_warp) leaves holes where an eye sees behind a near object. Filling them per eye invents two
different backgrounds. Here the holes of both eyes are mapped back into the source (centre) view, giving one mask
there (`source_hole_mask`); that region is inpainted once (a diffusion inpainting model, wrapping at the seam) into
a background layer, whose distance is the background side's (`background_distance`); the layer is then splatted
into each eye with the same warp and fills only that eye's hole pixels (`fill_from_layer`). Both eyes show the same
layer pixels at their own parallax, so they agree, and nothing outside the holes changes.

Convention: as ods_warp: image [H, W, C], r [H, W] metres, masks bool [H, W]; x wraps (the 0/360 seam is interior).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .ods import ODSGeometry, eye_sign, ods_shift_px
from .ods_warp import EyeResult, fill_holes, forward_splat

__all__ = ["source_hole_mask", "background_distance", "background_layer", "fill_from_layer"]


def source_hole_mask(
    r: torch.Tensor, geom: ODSGeometry, grow_px: int = 0, crack_px: int = 2, tau: float = 0.05
) -> torch.Tensor:
    """Bool [H, W] in the source view: where the hole pixels of either eye come from.

    A hole pixel of an eye shows background; its distance is that of the background-side neighbour (``fill_holes``
    'background'), so its source pixel is ``(y - round(dy), x - round(dx))`` for that distance's ODS shift at the
    hole. ``grow_px`` dilates the mask (wrapping in x) to give the inpainting some context."""
    height, width = r.shape
    mask = torch.zeros(height, width, dtype=torch.bool, device=r.device)
    blank = torch.zeros(height, width, 1, device=r.device)
    for eye in ("left", "right"):
        res = fill_holes(forward_splat(blank, r, eye, geom), eye, "background", crack_px, tau)
        hy, hx = torch.nonzero(res.hole, as_tuple=True)
        if hy.numel() == 0:
            continue
        dx, dy, _ = ods_shift_px(res.r, eye_sign(eye), geom, torch.float32)
        sx = torch.remainder(hx - torch.round(dx[hy, hx]).long(), width)
        sy = hy if geom.horizontal_only else (hy - torch.round(dy[hy, hx]).long()).clamp(0, height - 1)
        mask[sy, sx] = True
    if grow_px > 0:
        k = 2 * int(grow_px) + 1
        padded = torch.cat([mask[:, -grow_px:], mask, mask[:, :grow_px]], dim=1).float()[None, None]
        mask = F.max_pool2d(padded, k, stride=1, padding=(grow_px, 0))[0, 0] > 0
    return mask


def background_distance(r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``r`` with every masked pixel set to the larger distance of its nearest unmasked neighbours in the row
    (wrapping); rows without an unmasked pixel keep ``r``."""
    res = fill_holes(EyeResult(r[..., None].clone(), r.clone(), mask.clone()), "left", "background", crack_px=0)
    return torch.where(mask & ~mask.all(dim=1, keepdim=True), res.r, r)  # filled pixels stay flagged in res.hole


def background_layer(
    image: torch.Tensor, r: torch.Tensor, inpainted: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer (image [H, W, C], r [H, W]): the inpainted colour at background distance inside the mask, the
    source outside."""
    return torch.where(mask[..., None], inpainted, image), background_distance(r, mask)


def fill_from_layer(
    eye_result: EyeResult,
    layer_image: torch.Tensor,
    layer_r: torch.Tensor,
    eye: str | int,
    geom: ODSGeometry,
    crack_px: int = 2,
    tau: float = 0.05,
) -> EyeResult:
    """Fill the hole pixels of ``eye_result`` from the layer splatted into the same eye (any hole the layer leaves
    takes its background-side neighbour); other pixels are returned unchanged; ``hole`` is then all False."""
    layer = fill_holes(forward_splat(layer_image, layer_r, eye, geom), eye, "background", crack_px, tau)
    hole = eye_result.hole
    image = torch.where(hole[..., None], layer.image.to(eye_result.image), eye_result.image)
    r = torch.where(hole, layer.r.to(eye_result.r), eye_result.r)
    return EyeResult(image, r, torch.zeros_like(hole))
