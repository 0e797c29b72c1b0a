"""Multistep samplers under sync: the order they run, shown against a plain re-implementation of DPM-Solver++(2M).

Each sync step starts a new segment of the base sampler (docs/syncdiffusion.md), so a multistep sampler keeps its
history only inside a segment. Oracle: DPM-Solver++(2M) written out here from its formula (Lu et al. 2022, the
data-prediction form with the first-order step when there is no previous x0), with the history dropped at exactly the
sync steps, run through ComfyUI's SamplerCustom path on the same model, sigmas and noise. One view covers the latent,
so the view is its own anchor and the sync update leaves it unchanged: what remains is the sampler's order.
"""

from __future__ import annotations

import math

import torch
from model_fixtures import empty_latent, rel_err, sync_ksampler

STEPS, SYNC_STEPS, CFG, SEED = 6, 3, 5.0, 3


def plain_dpmpp_2m(restarts: set[int]):
    """k-diffusion-style sampler function: DPM-Solver++(2M), history dropped at the steps in `restarts`."""

    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        ones = x.new_ones([x.shape[0]])
        previous = None
        for i in range(len(sigmas) - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            denoised = model(x, sigmas[i] * ones, **extra_args)
            if i in restarts:
                previous = None
            if sigma_next == 0:
                x = denoised
            else:
                h = math.log(sigma / sigma_next)  # t = -log(sigma)
                if previous is None:
                    estimate = denoised
                else:
                    r = math.log(float(sigmas[i - 1]) / sigma) / h
                    estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
                x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
            previous = denoised
        return x

    return sample


def test_dpmpp_2m_with_sync_restarts_its_history_at_each_sync_step(pack, sd, lpips_alex, comfy):
    import comfy.sample
    import comfy.samplers

    latent = empty_latent(8, 8)  # 64 px: one 64-px window covers it
    synced = sync_ksampler(
        pack,
        sd,
        latent,
        lpips=lpips_alex,
        steps=STEPS,
        sampler_name="dpmpp_2m",
        sync_weight=20.0,
        sync_steps=SYNC_STEPS,
        cfg=CFG,
        seed=SEED,
    )
    model = sd["model"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", STEPS)
    noise = comfy.sample.prepare_noise(latent["samples"], SEED)

    def run(function):
        with torch.inference_mode():
            return comfy.sample.sample_custom(
                model,
                noise,
                CFG,
                comfy.samplers.KSAMPLER(function),
                sigmas,
                sd["positive"],
                sd["negative"],
                latent["samples"],
                seed=SEED,
            )

    sync_steps = set(range(SYNC_STEPS))  # sync_freq 1: the first SYNC_STEPS steps
    restarted = run(plain_dpmpp_2m(sync_steps))
    whole = run(plain_dpmpp_2m(set()))
    stock = run(comfy.samplers.ksampler("dpmpp_2m").sampler_function)
    assert rel_err(whole, stock) < 1e-5, "the plain 2M equals ComfyUI's dpmpp_2m without restarts"
    assert rel_err(restarted, whole) > 1e-3, "dropping the history must change the result"
    assert rel_err(synced, restarted) < 1e-5, (rel_err(synced, restarted), rel_err(synced, whole))
