"""The SyncDiffusion Sampler node's optional `sampler` input wraps a configured SAMPLER (its function and options).

Oracle: the stock SamplerCustomAdvanced with the same configured sampler (one full view, sync off, is exactly the
stock path). With sync on, the configured options reach the base sampler: eta 1.0 equals sampler_name
euler_ancestral (whose default eta is 1.0), eta 0.3 does not.
"""

from __future__ import annotations

import pytest
import torch
from model_fixtures import empty_latent, rel_err, sync_sampler_node

from comfy_harness import run_node, stock_node


def _custom_advanced(sd, sampler, latent, steps=3, seed=5):
    (guider,) = run_node(
        stock_node("CFGGuider"), model=sd["model"], positive=sd["positive"], negative=sd["negative"], cfg=5.0
    )
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=sd["model"], scheduler="normal", steps=steps, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=seed)
    advanced = stock_node("SamplerCustomAdvanced")
    out, _denoised = run_node(advanced, noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=latent)
    return out["samples"]


def _ancestral(eta: float):
    return run_node(stock_node("SamplerEulerAncestral"), eta=eta, s_noise=1.0)[0]


def test_configured_sampler_through_the_node_equals_the_stock_path_with_sync_off(pack, sd):
    latent = empty_latent(8, 8)
    configured = _ancestral(0.3)
    stock = _custom_advanced(sd, configured, latent)
    ours = _custom_advanced(sd, sync_sampler_node(pack, sd, sampler=configured, sampler_name="euler"), latent)
    assert torch.equal(ours, stock)
    # the widget alone would have run plain euler: the input overrides it, and eta matters
    widget_only = _custom_advanced(sd, sync_sampler_node(pack, sd, sampler_name="euler"), latent)
    assert rel_err(widget_only, stock) > 1e-3


def test_configured_options_reach_the_base_sampler_with_sync_on(pack, sd, lpips_alex):
    latent = empty_latent(8, 24)
    sync = dict(sync_weight=20.0, sync_steps=2)
    by_name = _custom_advanced(
        sd, sync_sampler_node(pack, sd, lpips_alex, sampler_name="euler_ancestral", **sync), latent, steps=2
    )
    eta_one = _custom_advanced(
        sd, sync_sampler_node(pack, sd, lpips_alex, sampler=_ancestral(1.0), **sync), latent, steps=2
    )
    eta_low = _custom_advanced(
        sd, sync_sampler_node(pack, sd, lpips_alex, sampler=_ancestral(0.3), **sync), latent, steps=2
    )
    assert rel_err(eta_one, by_name) < 1e-6
    assert rel_err(eta_low, by_name) > 1e-3


def test_a_sampler_that_is_not_a_ksampler_is_refused(pack, sd):
    inner = sync_sampler_node(pack, sd)
    with pytest.raises(ValueError) as err:
        sync_sampler_node(pack, sd, sampler=inner)
    message = str(err.value)
    assert "'sampler'" in message and "KSAMPLER" in message and "Fix:" in message, message
