"""The SyncDiffusion SAMPLER: the official loop mapped onto any ComfyUI sampler (spec syncdiffusion.md §3.5 "Option A").

For each sync step i (schedule from sync_core.sync.SyncSchedule), before the base sampler takes step i:
1. every view latent is moved to DDIM coordinates u = calculate_input(sigma, x_view) = x_view / sqrt(1 + sigma^2);
2. sync_core.sync.sync_views takes one LPIPS gradient step per non-anchor view (gradient through the guider's
   CFG'd x0, the VAE decoder and LPIPS), i.e. x' = x - w * (1 + sigma^2) * dL/dx in ComfyUI's coordinates;
3. the panorama becomes the average of the updated views, and the tiler feeds each view its own updated latent at
   the next model evaluation (exactly the official per-view DDIM step followed by averaging, for euler/ddim);
then the base sampler runs until the next sync step, so multistep samplers keep their history in between and
ancestral/SDE samplers draw from one noise sampler built for the whole schedule.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

import comfy.k_diffusion.sampling as k_sampling
import comfy.model_management
import comfy.model_sampling
import comfy.samplers

from ..sync_core import sync as core_sync
from ..sync_core import views as core_views
from .sync_autograd import grad_enabled
from .sync_tiling import PendingViews, ViewTiler


@dataclass(frozen=True)
class SyncSettings:
    """Everything the sampler needs besides the models. Window and stride are in latent units (height, width)."""

    window: tuple[int, int]
    stride: tuple[int, int]
    schedule: core_sync.SyncSchedule
    anchor: str | int = "middle"
    circular: bool = False
    view_batch_size: int = 1


def is_supported_model_sampling(model_sampling) -> bool:
    """EPS and v-prediction (incl. EDM) models have the VP geometry the sync update is defined in; flow/CONST not."""
    return isinstance(model_sampling, comfy.model_sampling.EPS) and not isinstance(
        model_sampling, getattr(comfy.model_sampling, "CONST", ()))


class SyncDiffusionSampler(comfy.samplers.Sampler):
    """A ComfyUI SAMPLER (usable by KSampler-like nodes and SamplerCustom/SamplerCustomAdvanced)."""

    def __init__(self, base_sampler_name: str, settings: SyncSettings, vae, perceptual, lpips_model=None):
        self.base_sampler_name = base_sampler_name
        self.base = comfy.samplers.sampler_object(base_sampler_name)
        self.settings = settings
        self.vae = vae
        self.perceptual = perceptual
        self.lpips_model = lpips_model

    def max_denoise(self, model_wrap, sigmas):
        return self.base.max_denoise(model_wrap, sigmas)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        latent_h, latent_w = noise.shape[-2:]
        views = core_views.build_view_grid(latent_h, latent_w, self.settings.window, self.settings.stride,
                                           circular=self.settings.circular)
        model_options = dict(extra_args["model_options"])
        tiler = ViewTiler(model_wrap.inner_model, views, (latent_h, latent_w), self.settings.view_batch_size,
                          previous_function=model_options.get("sampler_calc_cond_batch_function"))
        model_options["sampler_calc_cond_batch_function"] = tiler
        extra_args = {**extra_args, "model_options": model_options}
        total = len(sigmas) - 1
        sync_steps = self.settings.schedule.sync_step_indices(total) if total > 0 else []
        try:
            if not sync_steps:  # plain MultiDiffusion: the base sampler exactly as stock ComfyUI runs it
                return self.base.sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                                        disable_pbar)
            return self._sample_with_sync(model_wrap, sigmas, extra_args, callback, noise, latent_image,
                                          denoise_mask, disable_pbar, views, tiler, sync_steps)
        finally:
            tiler.cleanup()
            if self.lpips_model is not None:
                self.lpips_model.to(comfy.model_management.intermediate_device())

    # ---- the loop ----------------------------------------------------------------------------------------------
    def _sample_with_sync(self, model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
                          disable_pbar, views, tiler, sync_steps):
        model_sampling = model_wrap.inner_model.model_sampling
        base = self.base
        extra_args = dict(extra_args, denoise_mask=denoise_mask)
        model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
        model_k.latent_image = latent_image
        if base.inpaint_options.get("random", False):
            generator = torch.manual_seed(extra_args.get("seed", 41) + 1)
            model_k.noise = torch.randn(noise.shape, generator=generator, device="cpu").to(noise.dtype).to(noise.device)
        else:
            model_k.noise = noise
        x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, base.max_denoise(model_wrap, sigmas))
        options = dict(base.extra_options)
        noise_sampler = self._persistent_noise_sampler(x, sigmas, extra_args.get("seed"), options)
        if noise_sampler is not None:
            options["noise_sampler"] = noise_sampler
        total = len(sigmas) - 1
        anchor = core_views.anchor_index(views, self.settings.anchor)
        start = 0
        for boundary in sorted(set(sync_steps) | {total}):
            if boundary > start:
                x = self._run_segment(base, model_k, x, sigmas, start, boundary, extra_args, callback, disable_pbar,
                                      options, total)
            if boundary < total:
                comfy.model_management.throw_exception_if_processing_interrupted()
                x = self._sync(model_wrap, x, sigmas, boundary, total, views, anchor, tiler, extra_args, denoise_mask)
            start = boundary
        return model_sampling.inverse_noise_scaling(sigmas[-1], x)

    def _run_segment(self, base, model_k, x, sigmas, start, end, extra_args, callback, disable_pbar, options, total):
        k_callback = None
        if callback is not None:
            k_callback = lambda d: callback(d["i"] + start, d["denoised"], d["x"], total)  # noqa: E731
        return base.sampler_function(model_k, x, sigmas[start:end + 1], extra_args=extra_args, callback=k_callback,
                                     disable=disable_pbar, **options)

    def _persistent_noise_sampler(self, x, sigmas, seed, options):
        """One noise sampler for the whole schedule (a per-segment default would repeat or rebuild its noise)."""
        function = self.base.sampler_function
        try:
            parameters = inspect.signature(function).parameters
            source = inspect.getsource(function)
        except (TypeError, OSError, ValueError):
            return None
        if "noise_sampler" not in parameters or options.get("noise_sampler") is not None:
            return None
        if "BrownianTreeNoiseSampler" in source:
            positive = sigmas[sigmas > 0]
            return k_sampling.BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=seed,
                                                       cpu="_gpu" not in self.base_sampler_name)
        return k_sampling.default_noise_sampler(x, seed=seed)

    def _sync(self, model_wrap, x, sigmas, i, total, views, anchor, tiler, extra_args, denoise_mask):
        """One SyncDiffusion update at step i: returns the averaged latent and primes the tiler with per-view ones."""
        weight = self.settings.schedule.weight_at(i, total)
        sigma = sigmas[i]
        model_sampling = model_wrap.inner_model.model_sampling
        to_ddim = float(model_sampling.calculate_input(sigma, torch.ones((), device=x.device)))  # 1/sqrt(1+s^2)
        crops = core_views.crop_views(x, views)  # [V, B, C, h, w]
        mask_crops = None if denoise_mask is None else core_views.crop_views(
            denoise_mask.expand_as(x) if denoise_mask.shape != x.shape else denoise_mask, views)
        model_options, seed = extra_args["model_options"], extra_args.get("seed")

        def predict_x0(u: torch.Tensor, ids) -> torch.Tensor:
            comfy.model_management.throw_exception_if_processing_interrupted()
            z = (u / to_ddim).flatten(0, 1)
            tiler.view_mode = list(ids)
            try:
                x0 = model_wrap(z, sigma * z.new_ones(z.shape[0]), model_options=model_options, seed=seed)
            finally:
                tiler.view_mode = None
            return x0.reshape(u.shape)

        self._load_decoder(model_wrap)
        with grad_enabled():
            updated = core_sync.sync_views(crops * to_ddim, anchor, predict_x0, self._decode_fn(model_wrap),
                                           self.perceptual, weight, view_batch_size=self.settings.view_batch_size)
        updated = updated.to(x) / to_ddim
        if mask_crops is not None:  # inpainting: only the region being denoised moves
            updated = crops + (updated - crops) * mask_crops
        averaged = core_views.average_views(updated, views, x.shape[-2], x.shape[-1])
        deviations = [updated[v] - core_views.crop_view(averaged, views[v]) for v in range(len(views))]
        tiler.pending = PendingViews(sigma=float(sigma), deviations=deviations)
        return averaged

    # ---- decoder for the perceptual loss ------------------------------------------------------------------------
    def _load_decoder(self, model_wrap) -> None:
        patchers = [model_wrap.model_patcher, *getattr(model_wrap, "loaded_models", []), self.vae.patcher]
        comfy.model_management.load_models_gpu(patchers)
        if self.lpips_model is not None:
            self.lpips_model.to(self.vae.device)

    def _decode_fn(self, model_wrap):
        vae, model = self.vae, model_wrap.inner_model

        def decode(x0: torch.Tensor) -> torch.Tensor:
            latent = model.process_latent_out(x0).to(device=vae.device, dtype=vae.vae_dtype)
            image = vae.first_stage_model.decode(latent).float()[:, :3]
            return (image + 1.0) / 2.0

        return decode

