"""The SyncDiffusion SAMPLER: the official loop mapped onto any ComfyUI sampler (docs/syncdiffusion.md).

`sample_syncdiffusion` is a k-diffusion-style sampler function, wrapped by `comfy.samplers.KSAMPLER` with the
base sampler's own options (so noise scaling, inpainting and callbacks are ComfyUI's). For each sync step i
(schedule from sync_core.sync.SyncSchedule), before the base sampler takes step i:
1. every view latent is moved to VP (DDIM) coordinates u = s * x_view, s = sync_core.coordinates.vp_scale(kind,
   sigma): 1 / sqrt(1 + sigma^2) for eps/v models (ComfyUI's calculate_input), 1 / sqrt((1 - t)^2 + t^2) for
   flow-matching (CONST) models (docs/syncdiffusion.md, "Flow-matching models");
2. sync_core.sync.sync_views takes one LPIPS gradient step per non-anchor view (gradient through the guider's
   CFG'd x0, the decoder and LPIPS), i.e. x' = x - w / s^2 * dL/dx in ComfyUI's coordinates;
3. the panorama becomes the average of the updated views, and the tiler feeds each view its own updated latent at
   the next model evaluation (exactly the official per-view DDIM step followed by averaging, for euler/ddim);
then the base sampler runs until the next sync step. Each segment is a fresh call of the base sampler function, so
a multistep sampler (dpmpp_2m, deis, uni_pc, ...) keeps its history only inside a segment and restarts it at every
sync step: while syncing every step it takes its first-order start step each time (not yet carried across sync
steps). Ancestral/SDE samplers draw from one noise sampler built for the whole schedule.

Memory: views are batched by the plans of nodes/memory_plan.py; the gradient pass checkpoints the denoiser,
decoder and LPIPS blocks (same gradients, a fraction of the memory).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from dataclasses import dataclass

import comfy.k_diffusion.sampling as k_sampling
import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers
import torch
import tqdm

from ...sync_core import coordinates as core_coordinates
from ...sync_core import perceptual as core_perceptual
from ...sync_core import sync as core_sync
from ...sync_core import views as core_views
from ...sync_core.checkpointing import checkpointed
from ..shared import comfy_compat, model_cache
from ..shared.common import input_error
from . import memory_plan
from .gradient_bridge import grad_enabled, weight_bridge
from .view_tiler import ViewTiler, install_view_tiler


@dataclass(frozen=True)
class SyncSettings:
    """Everything the sampler needs besides the models. Window and stride are in latent units (height, width).

    `view_batch_size` 0 = plan both batch sizes from `memory_budget_gb` (0 = ComfyUI's free memory);
    `fast` = tiny (TAESD) loss decoder and LPIPS at 256 px; `gradient_checkpointing` = checkpoint the blocks of
    the gradient pass (exact; off only for tests and benchmarks). `fusion`: how views are merged
    (sync_core.fusion: "uniform" = MultiDiffusion, "gaussian" = Mixture of Diffusers, "spot" = SpotDiffusion shifts).
    A window larger than the latent on an axis is clamped to it when sampling starts (logged)."""

    window: tuple[int, int]
    stride: tuple[int, int]
    schedule: core_sync.SyncSchedule
    anchor: str | int = "middle"
    circular: bool = False
    view_batch_size: int = 0
    memory_budget_gb: float = 0.0
    fast: bool = False
    gradient_checkpointing: bool = True
    fusion: str = "uniform"


def sampling_kind(model_sampling) -> str | None:
    """The coordinates family of sync_core.coordinates for a ComfyUI model sampling object: "vp" for eps,
    v-prediction, EDM and x0 models (x = x0 + sigma e), "flow" for plain flow matching (CONST: x = (1-t) x0 + t e),
    None for parametrisations without a noise level the update can be mapped from (e.g. IMG_TO_IMG, Cosmos RFlow,
    CONST variants: IMG_TO_IMG_FLOW, noise_scale != 1; comfy_compat.flow_variant)."""
    if isinstance(model_sampling, getattr(comfy.model_sampling, "IMG_TO_IMG", ())):
        return None
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return "flow" if comfy_compat.flow_variant(model_sampling) is None else None
    if isinstance(model_sampling, comfy.model_sampling.EPS):
        return "vp"
    return None


def is_supported_model_sampling(model_sampling) -> bool:
    """eps / v-prediction / EDM / x0 models and flow-matching (CONST) models can be synchronised."""
    return sampling_kind(model_sampling) is not None


def vp_scale_at(model_sampling, sigma: torch.Tensor) -> float:
    """s with VP latent = s * x at `sigma` for this model (sync_core.coordinates.vp_scale; for eps/v models this is
    bit for bit ComfyUI's calculate_input(sigma, 1))."""
    kind = sampling_kind(model_sampling)
    if kind is None:
        raise TypeError(f"SyncDiffusion: no VP coordinates for {type(model_sampling).__name__}")
    return float(core_coordinates.vp_scale(kind, sigma, float(getattr(model_sampling, "sigma_data", 1.0))))


def _function_name(function) -> str:
    while isinstance(function, functools.partial):
        function = function.func
    return getattr(function, "__name__", "").removeprefix("sample_")


def persistent_noise_sampler(sampler_name: str | None, sampler_function, x, sigmas, seed, options: dict):
    """One noise sampler for the whole schedule, by an explicit rule (a per-segment default would repeat or
    rebuild its noise): a Brownian tree for the samplers whose own default is one (read from ComfyUI:
    comfy_compat.brownian_tree_samplers; "_gpu" twins draw it on the device), ComfyUI's default for any other
    sampler whose function takes `noise_sampler`, none otherwise (deterministic samplers). The sampler is named by
    `sampler_name` or, for a configured SAMPLER, by its k-diffusion function."""
    if options.get("noise_sampler") is not None:
        return None
    try:
        takes_noise = "noise_sampler" in inspect.signature(sampler_function).parameters
    except (TypeError, ValueError):
        takes_noise = False
    if not takes_noise:
        return None
    brownian = comfy_compat.brownian_tree_samplers()
    names = {n for n in (sampler_name, _function_name(sampler_function)) if n}
    if any(n in brownian for n in names):
        positive = sigmas[sigmas > 0]
        on_gpu = any(n.endswith("_gpu") for n in names)
        return k_sampling.BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seed, cpu=not on_gpu)
    return k_sampling.default_noise_sampler(x, seed=seed)


@dataclass
class LPIPSRun:
    """What `sample_syncdiffusion` reads of one run: the base sampler, the memory plan, the loss
    decoder, LPIPS and the run's settings (whose `schedule` gives w per step). Subclasses add `sync(...)` and, where
    the base sampler needs one, a `segment(deviations, sigma)` context."""

    base_sampler_name: str | None
    base: object
    plan: memory_plan.MemoryPlan
    vae: object
    perceptual: object
    lpips_patcher: object
    settings: object  # SyncSettings or the sphere's AnchorSettings

    @property
    def schedule(self) -> core_sync.SyncSchedule:
        return self.settings.schedule

    def segment(self, deviations, sigma: float):
        """The context the base sampler runs a segment in (none by default)."""
        return contextlib.nullcontext()

    def lpips_step(
        self, guider, views, anchor: int, sigma, i: int, total: int, extra_args: dict, *, in_view, checkpointing: bool
    ) -> torch.Tensor:
        """sync_core.sync.sync_views at step i on view latents [V, B, C, h, w] (the sampler's coordinates; returned
        in them), with the denoiser, the loss decoder and LPIPS placed by ComfyUI and their blocks checkpointed;
        view batches from the plan. `in_view(ids)`: the context the guider predicts views `ids` in."""
        model = comfy_compat.guider_inner_model(guider)
        to_ddim = vp_scale_at(model.model_sampling, sigma)  # VP latent = to_ddim * x (eps/v and flow models)
        model_options, seed = extra_args["model_options"], extra_args.get("seed")

        def predict_x0(u: torch.Tensor, ids) -> torch.Tensor:
            comfy.model_management.throw_exception_if_processing_interrupted()
            z = (u / to_ddim).flatten(0, 1)
            with in_view(ids):
                x0 = guider(z, sigma * z.new_ones(z.shape[0]), model_options=model_options, seed=seed)
            return x0.reshape(u.shape)

        lpips = [self.lpips_patcher] if self.lpips_patcher is not None else []
        comfy.model_management.load_models_gpu(
            [guider.model_patcher, *comfy_compat.guider_loaded_models(guider), self.vae.patcher, *lpips]
        )
        targets = memory_plan.checkpoint_targets(model.diffusion_model, self.vae.first_stage_model)
        with grad_enabled(), checkpointed(targets, enabled=checkpointing, context=weight_bridge):
            updated = core_sync.sync_views(
                views * to_ddim,
                anchor,
                predict_x0,
                loss_decoder(model, self.vae),
                self.perceptual,
                self.schedule.weight_at(i, total),
                view_batch_size=self.plan.gradient_planner,
            )
        return updated.to(views) / to_ddim


@dataclass
class SyncRun(LPIPSRun):
    """The flat sampler's run: its SyncSettings and the tiler that holds the views."""

    tiler: ViewTiler = None

    def segment(self, deviations, sigma: float):
        """The tiler feeds the views their synced latents."""
        return self.tiler.start_from(deviations, sigma)

    def sync(self, guider, x, sigmas, i: int, total: int, extra_args: dict):
        """One SyncDiffusion update at step i: (averaged latent, per-view deviations from it)."""
        views = self.tiler.select_grid(sigmas[i], sigmas)  # fusion "spot": this step's shifted grid
        anchor = core_views.anchor_index(views, self.settings.anchor)
        crops = core_views.crop_views(x, views)  # [V, B, C, h, w]
        denoise_mask = extra_args.get("denoise_mask")
        mask_crops = (
            None
            if denoise_mask is None
            else core_views.crop_views(
                denoise_mask.expand_as(x) if denoise_mask.shape != x.shape else denoise_mask, views
            )
        )
        updated = self.lpips_step(
            guider,
            crops,
            anchor,
            sigmas[i],
            i,
            total,
            extra_args,
            in_view=self.tiler.views,
            checkpointing=self.settings.gradient_checkpointing,
        )
        if mask_crops is not None:  # inpainting: only the region being denoised moves
            updated = crops + (updated - crops) * mask_crops
        averaged = self.tiler.fuse(updated, x.shape[-2], x.shape[-1])
        deviations = [updated[v] - core_views.crop_view(averaged, views[v]) for v in range(len(views))]
        return averaged, deviations


def loss_decoder(model, vae):
    """x0 (the model's latent space) -> image in [0, 1] through `vae`, differentiable (RGB of an LDM3D VAE)."""

    def decode(x0: torch.Tensor) -> torch.Tensor:
        latent = model.process_latent_out(x0).to(device=vae.device, dtype=vae.vae_dtype)
        image = vae.first_stage_model.decode(latent).float()[:, :3]
        return (image + 1.0) / 2.0

    return decode


def make_loss(lpips_model, resolution: int, fast: bool, window_px: int, checkpointing: bool):
    """The perceptual loss of the sync step: LPIPS at `resolution` (0 = native; the fast path's default when
    `fast`), checkpointed like the other blocks of the gradient pass."""
    if lpips_model is None:
        return None
    resolution = resolution or None
    if fast and resolution is None:
        resolution = memory_plan.fast_lpips_resolution(window_px)
    return core_perceptual.make_perceptual(lpips_model, resolution, checkpoint=checkpointing, context=weight_bridge)


@torch.no_grad()
def sample_syncdiffusion(model, x, sigmas, extra_args=None, callback=None, disable=None, *, run: SyncRun, **options):
    """k-diffusion sampler function: the base sampler over segments between sync steps, a sync update before each
    sync step. `model` is ComfyUI's KSamplerX0Inpaint; `options` are the base sampler's extra options."""
    extra_args = {} if extra_args is None else extra_args
    base_function = comfy_compat.ksampler_parts(run.base)[0]
    total = len(sigmas) - 1
    sync_steps = run.schedule.sync_step_indices(total) if total > 0 else []
    if not sync_steps:  # plain MultiDiffusion: the base sampler exactly as stock ComfyUI runs it
        return base_function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, **options)
    noise_sampler = persistent_noise_sampler(
        run.base_sampler_name, base_function, x, sigmas, extra_args.get("seed"), options
    )
    if noise_sampler is not None:
        options = {**options, "noise_sampler": noise_sampler}
    deviations, start = None, 0
    # One terminal bar over the whole schedule (the segments run with theirs disabled); ComfyUI's callback, which
    # drives the node's progress bar in the UI, sees step indices of the whole schedule too.
    with tqdm.trange(total, disable=disable, desc="SyncDiffusion", unit="step") as bar:
        for boundary in sorted(set(sync_steps) | {total}):
            if boundary > start:
                with run.segment(deviations, float(sigmas[start])):
                    x = base_function(
                        model,
                        x,
                        sigmas[start : boundary + 1],
                        extra_args=extra_args,
                        callback=functools.partial(_whole_schedule_callback, callback, bar, start),
                        disable=True,
                        **options,
                    )
                deviations = None
            if boundary < total:
                comfy.model_management.throw_exception_if_processing_interrupted()
                bar.set_postfix_str(f"sync {sync_steps.index(boundary) + 1}/{len(sync_steps)}")
                x, deviations = run.sync(model.inner_model, x, sigmas, boundary, total, extra_args)
                bar.set_postfix_str("")
            start = boundary
    return x


def _whole_schedule_callback(callback, bar, offset: int, info: dict) -> None:
    """A segment's step callback in whole-schedule terms: the step index shifted by the segment's start."""
    bar.update(1)
    if callback is not None:
        callback({**info, "i": info["i"] + offset})


class SyncDiffusionSampler(comfy.samplers.Sampler):
    """A ComfyUI SAMPLER (usable by KSampler-like nodes and SamplerCustom/SamplerCustomAdvanced)."""

    node_name = "SyncDiffusion"  # set to the building node's schema name by nodes.sync.inputs.build_sampler

    def __init__(
        self,
        base_sampler_name: str | None,
        settings: SyncSettings,
        vae,
        lpips_model=None,
        lpips_resolution: int = 0,
        base=None,
    ):
        """`base`: a configured k-diffusion SAMPLER (KSAMPLER: its function and options, e.g. eta) to wrap instead
        of ComfyUI's default sampler named `base_sampler_name`."""
        self.base_sampler_name = None if base is not None else base_sampler_name
        self.base = base if base is not None else comfy.samplers.sampler_object(base_sampler_name)
        self.settings = settings
        self.vae = vae
        # LPIPS as a module or a ModelPatcher (the cached loaders hand one); ComfyUI places and frees it
        if lpips_model is not None and not isinstance(lpips_model, comfy.model_patcher.ModelPatcher):
            lpips_model = model_cache.managed(lpips_model)
        self.lpips_patcher = lpips_model
        self.lpips_model = lpips_model.model if lpips_model is not None else None
        self.lpips_resolution = int(lpips_resolution)

    def max_denoise(self, model_wrap, sigmas):
        return self.base.max_denoise(model_wrap, sigmas)

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        settings = self.settings
        model_patcher = model_wrap.model_patcher
        if comfy_compat.uses_multigpu(extra_args["model_options"]):
            raise input_error(
                self.node_name,
                "model",
                "a model with MultiGPU clones",
                "ComfyUI evaluates MultiGPU clones in worker threads under torch.no_grad(), so the sync gradient "
                "would vanish",
                "remove the MultiGPU node in front of this sampler (sample on one device)",
            )
        batch, channels, latent_h, latent_w = noise.shape
        window, stride, notes = core_views.fit_window(latent_h, latent_w, settings.window, settings.stride)
        for note in notes:
            logging.info("%s: %s (latent units)", self.node_name, note)
        views = core_views.build_view_grid(latent_h, latent_w, window, stride, circular=settings.circular)
        vae = memory_plan.load_tiny_decoder(self.node_name, model_patcher) if settings.fast else self.vae
        plan = memory_plan.plan_memory(
            model_wrap.inner_model,
            vae,
            noise.device,
            len(views),
            batch,
            channels,
            window[0],
            window[1],
            settings.view_batch_size,
            settings.memory_budget_gb,
            settings.gradient_checkpointing,
        )
        logging.info("%s: %s", self.node_name, plan.describe(len(views)))
        tiler, extra_args = install_view_tiler(
            extra_args,
            model_wrap.inner_model,
            views,
            (latent_h, latent_w),
            plan.denoise_batch,
            settings.fusion,
            (window, stride, settings.circular),
        )
        run = SyncRun(
            self.base_sampler_name, self.base, plan, vae, self._perceptual(), self.lpips_patcher, settings, tiler
        )
        _function, extra_options, inpaint_options = comfy_compat.ksampler_parts(self.base)
        ksampler = comfy.samplers.KSAMPLER(
            functools.partial(sample_syncdiffusion, run=run),
            extra_options=extra_options,
            inpaint_options=inpaint_options,
        )
        try:
            return ksampler.sample(
                model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar
            )
        finally:
            tiler.cleanup()

    def _perceptual(self):
        return make_loss(
            self.lpips_model,
            self.lpips_resolution,
            self.settings.fast,
            8 * min(self.settings.window),
            self.settings.gradient_checkpointing,
        )
