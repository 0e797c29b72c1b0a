"""Plain re-implementation of the official SyncDiffusion loop (KAIST ``SyncDiffusion.sample_syncdiffusion``).

Independent of ``sync_core`` on purpose (it is the oracle the pack is tested against). Follows the official code
line by line (docs/syncdiffusion.md, "The official algorithm"), in latent units, fp32, no autocast, no loop closure.

Signature::

    official_sample(eps_fn, decode_fn, lpips_fn, scheduler, latent, num_inference_steps, window=64, stride=16,
                    sync_weight=20.0, sync_decay_rate=0.95, sync_freq=1, sync_thres=50, views=None) -> Tensor

- ``eps_fn(latent_batch [n,C,h,w], t) -> [n,C,h,w]``: the CFG'd model output for a batch of view latents at
  timestep ``t`` (a scalar tensor from ``scheduler.timesteps``); the CFG (cat[z,z], uncond/cond split,
  ``u + s(c-u)``) is the caller's. Must be differentiable (it is called under autograd in sync steps).
- ``decode_fn(latents [n,C,h,w]) -> [n,3,Hp,Wp]`` in [0,1] (official ``decode_latents``: ``vae.decode(z/scale)``,
  ``/2+0.5``, clamp); the oracle clamps again (idempotent). Differentiable.
- ``lpips_fn(a, b)`` on [-1,1] images -> ``[n,1,1,1]`` (``lpips.LPIPS`` forward).
- ``scheduler``: a diffusers ``DDIMScheduler`` (stateless; ``step`` is called several times per timestep);
  ``set_timesteps(num_inference_steps)`` is called here. ``step(...).pred_original_sample`` is x0,
  ``step(...).prev_sample`` the DDIM(eta=0) update.
- ``latent``: the initial panorama latent ``[1,C,H,W]`` (latent units); not mutated.
- ``views``: optional list of ``(h0, h1, w0, w1)``; default = official ``get_views`` (which requires
  ``(H - window) % stride == 0`` and ``(W - window) % stride == 0``).
Sync at step ``i`` iff ``(i+1) % sync_freq == 0 and i < sync_thres``, weight ``sync_weight * sync_decay_rate**i``;
anchor = ``views[len(views)//2]``. Returns the final latent ``[1,C,H,W]`` (not decoded).
``sync_thres=0`` is plain MultiDiffusion (no gradient pass at all); note that ``sync_weight=0`` still runs the
official gradient passes (and discards them).
Fusion variants (not in the official code; for the pack's fusion options): ``view_weights`` ``[h,w]`` weights
every view's DDIM result (``value += w * x``, ``count += w``: Mixture of Diffusers); ``views_fn(i)`` gives the
views of step ``i`` (SpotDiffusion's shifted grids), the anchor then being ``len(views_fn(i)) // 2``; it may return
``(views, weights)`` with one ``[h,w]`` weight per view (the spot grid's per-view masks).

Import from tests (pytest puts ``tests/`` on ``sys.path``; it has no ``__init__.py``):
``from oracles.official_loop import official_sample, get_views``.
"""

from __future__ import annotations

import torch


def get_views(panorama_height, panorama_width, window_size=64, stride=16):
    """Official utils.get_views, in latent units (the official divides pixel sizes by 8 first)."""
    if (panorama_height - window_size) % stride or (panorama_width - window_size) % stride:
        raise ValueError("the official get_views needs (size - window) % stride == 0 (it asserts divisibility)")
    num_blocks_height = (panorama_height - window_size) // stride + 1
    num_blocks_width = (panorama_width - window_size) // stride + 1
    total_num_blocks = int(num_blocks_height * num_blocks_width)
    views = []
    for i in range(total_num_blocks):
        h_start = int((i // num_blocks_width) * stride)
        h_end = h_start + window_size
        w_start = int((i % num_blocks_width) * stride)
        w_end = w_start + window_size
        views.append((h_start, h_end, w_start, w_end))
    return views


def exponential_decay_list(init_weight, decay_rate, num_steps):
    return [init_weight * (decay_rate**i) for i in range(num_steps)]


def official_sample(
    eps_fn,
    decode_fn,
    lpips_fn,
    scheduler,
    latent,
    num_inference_steps,
    window=64,
    stride=16,
    sync_weight=20.0,
    sync_decay_rate=0.95,
    sync_freq=1,
    sync_thres=50,
    views=None,
    view_weights=None,
    views_fn=None,
):
    latent = latent.detach().clone()
    per_view_weights = None
    if views is None:
        views = get_views(latent.shape[-2], latent.shape[-1], window, stride)
    anchor_view_idx = len(views) // 2
    scheduler.set_timesteps(num_inference_steps)
    sync_scheduler = exponential_decay_list(sync_weight, sync_decay_rate, num_inference_steps)

    def decode(z):
        return decode_fn(z).clamp(0, 1)

    for i, t in enumerate(scheduler.timesteps):
        if views_fn is not None:
            views = views_fn(i)
            if isinstance(views, tuple):
                views, per_view_weights = views
            anchor_view_idx = len(views) // 2
        count = torch.zeros_like(latent)
        value = torch.zeros_like(latent)
        do_sync = ((i + 1) % sync_freq == 0) and (i < sync_thres)

        if do_sync:
            with torch.no_grad():
                h_start, h_end, w_start, w_end = views[anchor_view_idx]
                latent_view = latent[:, :, h_start:h_end, w_start:w_end].detach()
                noise_pred = eps_fn(latent_view, t)
                latent_pred_x0 = scheduler.step(noise_pred, t, latent_view)["pred_original_sample"]
                decoded_image_anchors = decode(latent_pred_x0).detach()

        for view_idx, (h_start, h_end, w_start, w_end) in enumerate(views):
            latent_view = latent[:, :, h_start:h_end, w_start:w_end].detach()
            latent_view_copy = latent_view.clone().detach()

            if do_sync:
                with torch.enable_grad():
                    latent_view = latent_view.clone().requires_grad_(True)
                    noise_pred = eps_fn(latent_view, t)
                    out = scheduler.step(noise_pred, t, latent_view)
                    latent_pred_x0 = out["pred_original_sample"]
                    decoded_x0 = decode(latent_pred_x0)
                    percept_loss = lpips_fn(decoded_x0 * 2.0 - 1.0, decoded_image_anchors * 2.0 - 1.0)
                    norm_grad = torch.autograd.grad(outputs=percept_loss.sum(), inputs=latent_view)[0]
                if view_idx != anchor_view_idx:
                    latent_view_copy = latent_view_copy - sync_scheduler[i] * norm_grad

            with torch.no_grad():
                noise_pred_new = eps_fn(latent_view_copy, t)
                latent_view_denoised = scheduler.step(noise_pred_new, t, latent_view_copy)["prev_sample"]
            weights = view_weights if per_view_weights is None else per_view_weights[view_idx]
            if weights is None:
                value[:, :, h_start:h_end, w_start:w_end] += latent_view_denoised
                count[:, :, h_start:h_end, w_start:w_end] += 1
            else:
                value[:, :, h_start:h_end, w_start:w_end] += weights * latent_view_denoised
                count[:, :, h_start:h_end, w_start:w_end] += weights

        latent = torch.where(count > 0, value / count, value)
    return latent
