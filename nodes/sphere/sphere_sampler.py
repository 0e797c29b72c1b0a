"""Joint diffusion on the sphere: views of one equirect canvas synchronised at every step (docs/sphere360.md).

The views are one batch (view-major) sampled by ComfyUI's own sampler; a post-CFG function replaces each view's
predicted x0, until the cut-off sigma, by the consensus of all views (SyncTweedies' x0 synchronisation): decode
every view's x0, fuse on the canvas (``ldm3d_core.sphere_canvas``), render the canvas back into every view, encode.
The sampler then steps each view from its own latent toward that x0. A view that no other view overlaps keeps its
own x0 (it has nothing to agree with), so one view alone samples exactly as the stock KSampler.
LDM3D VAEs (RGB + depth): each view's depth (inverse z-depth, white = near) becomes inverse ray distance (divided by
|(x_c, y_c, 1)|), is aligned (least-squares scale and shift) to the previous depth canvas rendered into the view,
and is fused like the colour; rendered back, it is turned into inverse z-depth again and encoded with the colour.

On top, SyncDiffusion's LPIPS step (`SphereSampler` with `AnchorSettings`): before each of the first anchor steps,
every view's latent takes one gradient step pulling its decoded x0 toward the anchor view's (the flat sampler's
`LPIPSRun.lpips_step` and segment loop, with each view its own latent). Memory: the views are denoised in batches
of the plan (nodes/sync/memory_plan.py, the calc_cond_batch hook `ViewBatches`), the gradient pass batches and
checkpoints like the flat sampler, and ComfyUI's VAE batches the decode and encode of the fusion by its own estimate.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from dataclasses import dataclass

import comfy.model_management
import comfy.samplers
import torch

from ...ldm3d_core import rgbd
from ...ldm3d_core.projection import View, view_directions
from ...ldm3d_core.sphere_canvas import SphereCanvas, align_depth
from ...ldm3d_core.sphere_views import cube_layout, ring_layout
from ...sync_core import sync as core_sync
from ..ldm3d.ldm3d_vae import is_ldm3d_vae
from ..shared import comfy_compat
from ..sync import memory_plan
from ..sync.sampler import LPIPSRun, make_loss, sample_syncdiffusion

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


@dataclass(frozen=True)
class AnchorSettings:
    """SyncDiffusion's LPIPS step on the sphere: views pulled toward view `view` by `schedule` (w, decay, the first
    steps); `view_batch_size` (0 = planned from `memory_budget_gb`, 0 = ComfyUI's free memory) batches both the
    denoising and the gradient pass; `fast`: the loss decodes with TAESD and LPIPS runs at 256 px."""

    schedule: core_sync.SyncSchedule
    view: int = 0
    view_batch_size: int = 0
    memory_budget_gb: float = 0.0
    fast: bool = False

    @property
    def active(self) -> bool:
        return self.schedule.weight > 0 and self.schedule.steps > 0


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
        self._paused = False

    @contextlib.contextmanager
    def paused(self):
        """No fusion inside the block (the LPIPS gradient pass differentiates each view's own x0)."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False

    def __call__(self, args: dict) -> torch.Tensor:
        denoised = args["denoised"]
        if self._paused or float(args["sigma"].max()) <= self.sigma_cut or not bool(self.synced.any()):
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


class ViewBatches:
    """The calc_cond_batch hook that evaluates the stacked views `rows` batch rows at a time (every view has the
    same conditioning, so a slice is just fewer views); `previous` is the hook installed before it."""

    def __init__(self, rows: int, previous=None):
        self.rows = max(1, int(rows))
        self.previous = previous

    def __call__(self, args: dict) -> list[torch.Tensor]:
        x, sigma = args["input"], args["sigma"]

        def evaluate(rows: slice) -> list[torch.Tensor]:
            comfy.model_management.throw_exception_if_processing_interrupted()
            timestep = sigma[rows] if sigma.shape[0] == x.shape[0] else sigma
            return comfy_compat.calc_cond_batch(
                args["model"], args["conds"], x[rows], timestep, args["model_options"], self.previous
            )

        if x.shape[0] <= self.rows:
            return evaluate(slice(None))
        parts = [evaluate(slice(start, start + self.rows)) for start in range(0, x.shape[0], self.rows)]
        return [torch.cat([part[k] for part in parts]) for k in range(len(parts[0]))]


@dataclass
class SphereRun(LPIPSRun):
    """The sphere's run for sampler.sample_syncdiffusion (settings: AnchorSettings). Each view is its
    own latent, so the step's result is the new latent (no averaging, no deviations)."""

    fusion: SphereSync = None

    def sync(self, guider, x, sigmas, i: int, total: int, extra_args: dict):
        views = x.reshape(self.fusion.views, -1, *x.shape[1:])  # [V, B, C, h, w], view-major
        updated = self.lpips_step(
            guider,
            views,
            self.settings.view,
            sigmas[i],
            i,
            total,
            extra_args,
            in_view=lambda ids: self.fusion.paused(),
            checkpointing=True,
        )
        return updated.reshape(x.shape), None


class SphereSampler(comfy.samplers.Sampler):
    """A ComfyUI SAMPLER over the sphere's views (one batch, view-major; the fusion is the model's post-CFG
    function): ComfyUI's `base_sampler_name` with the views denoised in planned batches and, when the anchor step
    is on, SyncDiffusion's LPIPS step before each anchor step."""

    def __init__(self, node: str, base_sampler_name: str, fusion: SphereSync, anchor: AnchorSettings, vae, lpips=None):
        """`lpips`: (ModelPatcher, resolution) from the LPIPS loader, needed when the anchor step is on."""
        self.node = node
        self.base_sampler_name = base_sampler_name
        self.base = comfy.samplers.sampler_object(base_sampler_name)
        self.fusion = fusion
        self.anchor = anchor
        self.vae = vae
        self.lpips = lpips

    def max_denoise(self, model_wrap, sigmas):
        return self.base.max_denoise(model_wrap, sigmas)

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        anchor = self.anchor
        fast = anchor.fast and anchor.active
        loss_vae = memory_plan.load_tiny_decoder(self.node, model_wrap.model_patcher) if fast else self.vae
        rows, channels, height, width = noise.shape
        batch = rows // self.fusion.views
        plan = memory_plan.plan_memory(
            model_wrap.inner_model,
            loss_vae,
            noise.device,
            self.fusion.views,
            batch,
            channels,
            height,
            width,
            anchor.view_batch_size,
            anchor.memory_budget_gb,
            checkpointing=True,
        )
        logging.info("%s: %s", self.node, plan.describe(self.fusion.views))
        model_options = dict(extra_args["model_options"])
        model_options[comfy_compat.CALC_COND_BATCH_HOOK] = ViewBatches(
            plan.denoise_batch * batch, model_options.get(comfy_compat.CALC_COND_BATCH_HOOK)
        )
        extra_args = {**extra_args, "model_options": model_options}
        function, extra_options, inpaint_options = comfy_compat.ksampler_parts(self.base)
        if anchor.active:
            patcher, resolution = self.lpips
            loss = make_loss(patcher.model, resolution, fast, 8 * width, checkpointing=True)
            run = SphereRun(self.base_sampler_name, self.base, plan, loss_vae, loss, patcher, anchor, self.fusion)
            function = functools.partial(sample_syncdiffusion, run=run)
        ksampler = comfy.samplers.KSAMPLER(function, extra_options=extra_options, inpaint_options=inpaint_options)
        return ksampler.sample(
            model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar
        )
