"""Run the sync_core SyncDiffusion loop with diffusers parts (UNet2DConditionModel + AutoencoderKL/Tiny + DDIM).

This reproduces the official ``sample_syncdiffusion`` loop (docs/syncdiffusion.md, "The official algorithm") with the
pack's own core (``views.build_view_grid`` / ``crop_views`` / ``average_views`` and ``sync.sync_views``):
for every step ``i`` (timestep ``t``): if the schedule syncs at ``i``, every non-anchor view latent gets one LPIPS
gradient step towards the anchor's x0 image (``sync_views``; x0 = DDIM ``pred_original_sample`` of the CFG'd model
output, gradient through UNet, VAE decoder and LPIPS); then every view is denoised from its own (updated) latent by
a second UNet pass and ``scheduler.step(...).prev_sample``; the views are averaged (value / count).

Decisions:
- Only ``DDIMScheduler`` (or subclasses) with ``eta = 0``: its ``step`` is stateless, so calling it once per view
  and pass is exact. Stateful multistep schedulers (DPM-Solver, PNDM, ...) are refused.
- Prediction types: whatever ``DDIMScheduler.step`` converts (``epsilon``, ``v_prediction``, ``sample``); x0 and
  the update come from ``step``, so v-prediction models (SD2 768-v) work unchanged; pick the window accordingly
  (96 latent for 768-px models). The sync update is applied to the DDIM latent ``x_t`` as in the official code.
- Decode for the loss and output: ``vae.decode(z / scaling_factor + shift_factor).sample / 2 + 0.5`` (the official
  hard-codes 0.18215, the SD1/2 value of ``scaling_factor``; AutoencoderTiny has 1.0 and decodes to [-1, 1] too).
- CFG: ``text_embeds = (uncond, cond)``, UNet on ``cat[z, z]`` with ``cat[uncond, cond]`` and
  ``u + s (c - u)``, like the official code; ``uncond=None`` runs the conditional branch only.
- Batches: latents ``[B, C, H, W]``; embeddings ``[1 or B, L, D]``. Each sample is synced independently.
- Runs in the modules' dtype/device; no autocast (the official code uses CUDA autocast; fp32 is its reference math).

Convention: ``height``/``width`` in pixels (multiples of the VAE factor); ``window``/``stride`` in latent units;
latents ``[B, C, height/f, width/f]`` in the scheduler's (scaled) space.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .sync import SyncSchedule, sync_views
from .views import anchor_index as _anchor_index
from .views import average_views, build_view_grid, crop_views

__all__ = ["sample_panorama", "vae_scale_factor", "make_decode", "make_eps_fn", "decode_latents"]


def vae_scale_factor(vae: torch.nn.Module) -> int:
    cfg = vae.config
    if getattr(cfg, "block_out_channels", None) is not None:
        return 2 ** (len(cfg.block_out_channels) - 1)
    if getattr(cfg, "num_decoder_blocks", None) is not None:  # AutoencoderTiny
        return int(getattr(cfg, "upsampling_scaling_factor", 2)) ** (len(cfg.num_decoder_blocks) - 1)
    raise ValueError(f"cannot infer the VAE downscale factor of {type(vae).__name__}; pass vae_factor=")


def make_decode(vae: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """Latents (scheduler space) ``[N,C,h,w]`` -> images ``[N,3,h*f,w*f]`` mapped to [0,1], not clamped,
    differentiable."""
    scale = float(getattr(vae.config, "scaling_factor", 0.18215) or 1.0)
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    param = next(vae.parameters())

    def decode(z: Tensor) -> Tensor:
        img = vae.decode((z / scale + shift).to(param.dtype)).sample
        return img.to(torch.promote_types(img.dtype, torch.float32)) / 2 + 0.5

    return decode


def decode_latents(vae: torch.nn.Module, latents: Tensor) -> Tensor:
    """Official ``decode_latents``: images in [0,1], ``[B,3,H,W]``."""
    with torch.no_grad():
        return make_decode(vae)(latents).clamp(0, 1)


def make_eps_fn(
    unet: torch.nn.Module, uncond: Tensor | None, cond: Tensor, guidance_scale: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """``eps_fn(z [N,C,h,w], t) -> CFG'd model output [N,C,h,w]``. Embeddings ``[1 or B, L, D]`` are tiled to N
    (N must be a multiple of their batch)."""
    param = next(unet.parameters())

    def tile(e: Tensor, n: int) -> Tensor:
        if n % e.shape[0]:
            raise ValueError(f"{n} latents cannot be paired with {e.shape[0]} text embeddings")
        return e.repeat(n // e.shape[0], 1, 1).to(device=param.device, dtype=param.dtype)

    def eps_fn(z: Tensor, t: Tensor) -> Tensor:
        n = z.shape[0]
        zin = z.to(param.dtype)
        if uncond is None:
            return unet(zin, t, encoder_hidden_states=tile(cond, n)).sample.to(z.dtype)
        out = unet(torch.cat([zin, zin]), t, encoder_hidden_states=torch.cat([tile(uncond, n), tile(cond, n)])).sample
        eps_u, eps_c = out.to(z.dtype).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return eps_fn


def _check_scheduler(scheduler: object) -> None:
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(
            f"sample_panorama needs a diffusers DDIMScheduler (stateless step, as in the official code), "
            f"got {type(scheduler).__name__}; use DDIMScheduler.from_config(scheduler.config)"
        )
    if scheduler.config.prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise ValueError(f"unsupported prediction_type {scheduler.config.prediction_type!r}")


def sample_panorama(
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    scheduler: object,
    text_embeds: tuple[Tensor | None, Tensor],
    height: int,
    width: int,
    window: int | tuple[int, int] = 64,
    stride: int | tuple[int, int] = 16,
    schedule: SyncSchedule | None = None,
    guidance_scale: float = 7.5,
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    latents: Tensor | None = None,
    circular: bool = False,
    anchor: str | int = "middle",
    num_inference_steps: int = 50,
    view_batch_size: int = 1,
    clamp_decoded: bool = True,
    vae_factor: int | None = None,
    batch_size: int = 1,
    callback: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """SyncDiffusion panorama latents with diffusers modules (see the module docstring).

    ``lpips``: a module/callable ``(a, b) -> [N,1,1,1]`` on [-1,1] images (e.g. ``perceptual.build_lpips()``);
    required when the schedule syncs at least once. ``latents``: initial noise ``[B,C,h,w]`` (not mutated), else
    ``torch.randn`` with ``generator`` (CPU, like the official code), times ``scheduler.init_noise_sigma``. The loop
    runs in float32 (float64 if ``latents`` are float64).
    ``callback(i, latents)`` after every step. Returns the final latents ``[B,C,h,w]`` (decode with
    :func:`decode_latents`).
    """
    _check_scheduler(scheduler)
    schedule = schedule if schedule is not None else SyncSchedule()
    uncond, cond = text_embeds
    f = vae_factor or vae_scale_factor(vae)
    if height % f or width % f:
        raise ValueError(f"height/width ({height}x{width}) must be multiples of the VAE factor {f}")
    lat_h, lat_w = height // f, width // f
    views = build_view_grid(lat_h, lat_w, window, stride, circular=circular)
    a = _anchor_index(views, anchor)
    param = next(unet.parameters())
    channels = unet.config.in_channels

    if latents is None:
        latents = torch.randn((batch_size, channels, lat_h, lat_w), generator=generator, dtype=torch.float32)
        latents = latents * scheduler.init_noise_sigma
    elif tuple(latents.shape[-3:]) != (channels, lat_h, lat_w) or latents.dim() != 4:
        raise ValueError(f"latents must be [B, {channels}, {lat_h}, {lat_w}], got {tuple(latents.shape)}")
    x = latents.detach().clone().to(param.device, torch.float64 if latents.dtype == torch.float64 else torch.float32)

    eps_fn = make_eps_fn(unet, uncond, cond, guidance_scale)
    decode = make_decode(vae)
    scheduler.set_timesteps(num_inference_steps)
    timesteps = scheduler.timesteps
    total = len(timesteps)

    def model_step(z: Tensor, t: Tensor) -> object:  # z [n, B, C, h, w] -> DDIM step output on [n*B, C, h, w]
        flat = z.flatten(0, 1)
        return scheduler.step(eps_fn(flat, t), t, flat, eta=0.0)

    for i, t in enumerate(timesteps):
        zv = crop_views(x, views)  # [V, B, C, h, w]
        w_i = schedule.weight_at(i, total)
        if w_i > 0:
            if lpips is None:
                raise ValueError("sample_panorama: the schedule syncs but no lpips module was given")

            def predict_x0(z: Tensor, ids: Sequence[int], _t: Tensor = t) -> Tensor:
                return model_step(z, _t).pred_original_sample.reshape(z.shape)

            zv = sync_views(
                zv, a, predict_x0, decode, lpips, w_i, view_batch_size=view_batch_size, clamp_decoded=clamp_decoded
            )
        tiles = []
        with torch.no_grad():
            for start in range(0, len(views), view_batch_size):
                chunk = zv[start : start + view_batch_size]
                tiles.extend(model_step(chunk, t).prev_sample.reshape(chunk.shape).unbind(0))
        x = average_views(tiles, views, lat_h, lat_w)
        if callback is not None:
            callback(i, x)
    return x
