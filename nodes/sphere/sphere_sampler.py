"""Joint diffusion on the sphere: views of one equirect canvas synchronised at every step (docs/sphere360.md).

The views are one batch (view-major) sampled by ComfyUI's own sampler; a post-CFG function replaces each view's
predicted x0, until the cut-off sigma, by the consensus of all views (SyncTweedies' x0 synchronisation): decode
every view's x0, fuse on the canvas (``ldm3d_core.sphere_canvas``), render the canvas back into every view, encode.
The sampler then steps each view from its own latent toward that x0. A view that no other view overlaps keeps its
own x0 (it has nothing to agree with), so one view alone samples exactly as the stock KSampler.
LDM3D VAEs (RGB + depth): each view's depth (inverse z-depth, white = near) becomes inverse ray distance (divided by
|(x_c, y_c, 1)|), is aligned (least-squares scale and shift) to the previous depth canvas rendered into the view,
and is fused like the colour; rendered back, it is turned into inverse z-depth again and encoded with the colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import comfy.model_management
import torch

from ...ldm3d_core import rgbd
from ...ldm3d_core.projection import View, view_directions
from ...ldm3d_core.sphere_canvas import SphereCanvas, align_depth
from ...ldm3d_core.sphere_views import cube_layout, ring_layout
from ..ldm3d.ldm3d_vae import is_ldm3d_vae

LAYOUTS = ("rings", "cube")


@dataclass(frozen=True)
class SphereSettings:
    """Views of ``view_px`` pixels (square) with a horizontal FOV, placed by ``layout`` with ``overlap``; the
    fusion canvas is ``canvas_width`` x ``canvas_width / 2``; synchronised while sigma > the sigma of step
    ``round(sync_until * steps)``."""

    view_px: int
    fov_deg: float
    overlap: float
    layout: str
    canvas_width: int
    sync_until: float


def sphere_views(settings: SphereSettings) -> list[View]:
    size = (settings.view_px, settings.view_px)
    if settings.layout == "cube":
        return cube_layout(size, settings.fov_deg)
    return ring_layout(size, settings.fov_deg, settings.overlap)


def default_canvas_width(view_px: int, fov_deg: float) -> int:
    """The canvas width that keeps the views' pixel density at their centres (even, a multiple of 8)."""
    return max(16, int(math.ceil(360.0 / fov_deg * view_px / 8.0)) * 8)


class SphereSync:
    """The post-CFG function: consensus x0 for every overlapping view while sigma > ``sigma_cut``."""

    def __init__(self, cameras: list[View], canvas_width: int, vae, sigma_cut: float, views_per_image: int):
        self.canvas = SphereCanvas(cameras, canvas_width // 2, canvas_width)
        self.synced = self.canvas.overlapping()
        self.vae = vae
        self.sigma_cut = sigma_cut
        self.views = len(cameras)
        self.batch = views_per_image
        self.with_depth = is_ldm3d_vae(vae)
        # |(x_c, y_c, 1)| per view pixel: inverse z-depth / this = inverse ray distance
        self.ray_norm = torch.stack([view_directions(c).norm(dim=-1) for c in cameras]).float()[:, None, None]
        self.previous = None  # the last fused canvases (colour, depth): kept where no view sees
        self.steps_synced = 0

    def __call__(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        if float(args["sigma"].max()) <= self.sigma_cut or not bool(self.synced.any()):
            return denoised
        comfy.model_management.throw_exception_if_processing_interrupted()
        model = args["model"]
        colour, depth = self.decode(model.process_latent_out(denoised))
        previous_colour, previous_depth = self.previous or (None, None)
        colour = self.canvas.fuse(colour, previous_colour)
        if depth is not None:
            depth = self.canvas.fuse(self.aligned(depth, previous_depth), previous_depth)
        self.previous = (colour, depth)
        latent = model.process_latent_in(self.encode(self.canvas.render(colour), self.render_depth(depth)))
        keep = ~self.synced.repeat_interleave(self.batch).to(denoised.device)
        self.steps_synced += 1
        return torch.where(keep[:, None, None, None], denoised, latent.to(denoised))

    def decode(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents [V * B, c, h, w] -> colour views [V, B, 3, H, W] and (LDM3D) inverse ray distance [V, B, 1, H, W]."""
        if self.with_depth:
            rgb, depth, _ = rgbd.split_rgbd(self.vae.decode_rgbd(latent.to(self.vae.vae_dtype)))
            depth = self._views(depth[..., None]) / self.ray_norm.to(depth.device)
        else:
            rgb, depth = self.vae.decode(latent.to(self.vae.vae_dtype)), None
        return self._views(rgb), depth

    def encode(self, colour: torch.Tensor, depth: torch.Tensor | None) -> torch.Tensor:
        rgb = colour.flatten(0, 1).movedim(1, -1).clamp(0, 1)
        if depth is None:
            return self.vae.encode(rgb)
        return self.vae.encode(rgbd.merge_rgbd(rgb, depth.flatten(0, 1)[:, 0], self.vae.ldm3d_channels))

    def aligned(self, depth: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """Each view's depth brought to the previous depth canvas (scale and shift) where there is one."""
        if previous is None:
            return depth
        reference = self.canvas.render(previous)
        out = depth.clone()
        for v in range(self.views):
            scale, shift = align_depth(depth[v], reference[v], torch.ones_like(depth[v], dtype=torch.bool))
            out[v] = depth[v] * scale + shift
        return out

    def render_depth(self, depth_canvas: torch.Tensor | None) -> torch.Tensor | None:
        """Inverse ray distance on the canvas -> each view's inverse z-depth in [0, 1]."""
        if depth_canvas is None:
            return None
        return (self.canvas.render(depth_canvas) * self.ray_norm.to(depth_canvas.device)).clamp(0, 1)

    def _views(self, pixels: torch.Tensor) -> torch.Tensor:
        """[V * B, H, W, C] -> [V, B, C, H, W] float."""
        return pixels.movedim(-1, 1).reshape(self.views, self.batch, pixels.shape[-1], *pixels.shape[1:3]).float()

    def equirect(self, latent: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final view latents -> equirect IMAGE [B, width / 2, width, 3] and (LDM3D) depth [B, width / 2, width]
        (inverse ray distance, white = near), both fused with feathered weights."""
        colour, depth = self.decode(latent)
        target = (
            self.canvas
            if width == self.canvas.width
            else SphereCanvas(self.canvas.cameras, width // 2, width, device=colour.device)
        )
        image = target.fuse(colour).movedim(1, -1).clamp(0, 1)
        return image, None if depth is None else target.fuse(depth)[:, 0].clamp(0, 1)
