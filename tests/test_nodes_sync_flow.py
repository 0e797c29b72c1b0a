"""SyncDiffusion on flow-matching models (ComfyUI CONST sampling): tiny random Flux and SD3 (MMDiT) fixtures
built from ComfyUI's own classes and loaded by the stock UNETLoader, a 16-channel VAE from the stock VAELoader.

Oracles (written here, independent of the pack): the stock KSampler (one full view, no sync), a plain
MultiDiffusion Euler loop in flow coordinates (many views, w = 0), a plain re-implementation of the sync update in
VP coordinates (w > 0), a finite-difference check of the update's direction, rolls of a circular panorama.
"""

from __future__ import annotations

import math

import pytest
import torch

from comfy_harness import run_node, stock_node
from test_nodes_sync import lpips_alex, rel_err, sync_ksampler  # noqa: F401

FLUX = "sdl3d_tiny_flux.safetensors"
SD3 = "sdl3d_tiny_sd3.safetensors"
FLOW_VAE = "sdl3d_tiny_flow_vae.safetensors"
GUIDANCE = 3.5


def _random_cond(gen, tokens, width, pooled):
    return [[torch.randn(1, tokens, width, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}]]


@pytest.fixture(scope="module")
def vae16(comfy):
    return run_node(stock_node("VAELoader"), vae_name=FLOW_VAE)[0]


@pytest.fixture(scope="module")
def flux(comfy, vae16):
    """Flux dev shaped: distilled guidance through the stock FluxGuidance node, cfg 1 (no negative pass)."""
    (model,) = run_node(stock_node("UNETLoader"), unet_name=FLUX, weight_dtype="default")
    gen = torch.Generator().manual_seed(10)
    (positive,) = run_node(stock_node("FluxGuidance"), conditioning=_random_cond(gen, 4, 768, 768),
                           guidance=GUIDANCE)
    return dict(model=model, positive=positive, negative=positive, vae=vae16, cfg=1.0, family="flux")


@pytest.fixture(scope="module")
def sd3(comfy, vae16):
    (model,) = run_node(stock_node("UNETLoader"), unet_name=SD3, weight_dtype="default")
    gen = torch.Generator().manual_seed(11)
    return dict(model=model, positive=_random_cond(gen, 4, 4096, 2048), negative=_random_cond(gen, 4, 4096, 2048),
                vae=vae16, cfg=4.0, family="sd3")


@pytest.fixture(scope="module", params=["flux", "sd3"])
def family(request):
    return request.getfixturevalue(request.param)


def empty16(h, w, batch=1):
    return {"samples": torch.zeros(batch, 16, h, w)}


def run_sync(pack, job, lat, **overrides):
    params = dict(cfg=job["cfg"], steps=3)
    params.update(overrides)
    return sync_ksampler(pack, job, lat, **params)


def stock(job, lat, sampler_name="euler", scheduler="simple", steps=3, seed=3):
    return run_node(stock_node("KSampler"), model=job["model"], positive=job["positive"], negative=job["negative"],
                    latent_image=lat, seed=seed, steps=steps, cfg=job["cfg"], sampler_name=sampler_name,
                    scheduler=scheduler, denoise=1.0)[0]["samples"]


# ---------------------------------------------------------------------------------------------- coordinates

def test_fixtures_are_detected_as_flux_and_sd3_with_flow_sampling(pack, flux, sd3):
    import comfy.model_base
    import comfy.model_sampling

    assert type(flux["model"].model) is comfy.model_base.Flux and type(sd3["model"].model) is comfy.model_base.SD3
    for job in (flux, sd3):
        ms = job["model"].get_model_object("model_sampling")
        assert isinstance(ms, comfy.model_sampling.CONST)
        assert pack.nodes.sync_sampler.sampling_kind(ms) == "flow"
        assert job["model"].get_model_object("latent_format").latent_channels == 16
    assert flux["vae"].latent_channels == 16


def test_vp_scale_reduces_to_comfyui_calculate_input_on_eps_and_v_models_bit_for_bit(pack, comfy):
    import comfy.samplers
    from test_nodes_sync import CKPT

    sampler = pack.nodes.sync_sampler
    (model, _clip, _vae) = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)
    (v_model,) = run_node(stock_node("ModelSamplingDiscrete"), model=model, sampling="v_prediction", zsnr=False)
    for job in (model, v_model):
        ms = job.get_model_object("model_sampling")
        assert sampler.sampling_kind(ms) == "vp"
        for scheduler in ("normal", "karras", "ddim_uniform"):
            for sigma in comfy.samplers.calculate_sigmas(ms, scheduler, 12):
                ours = sampler.vp_scale_at(ms, sigma)
                theirs = float(ms.calculate_input(sigma, torch.ones(())))
                assert ours == theirs, (scheduler, float(sigma))


def test_flow_vp_scale_follows_the_models_own_schedule(pack, flux, sd3):
    import comfy.samplers

    sampler = pack.nodes.sync_sampler
    for job in (flux, sd3):
        ms = job["model"].get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 6)
        assert float(sigmas[0]) == pytest.approx(1.0) and float(sigmas[-1]) == 0.0
        for t in sigmas.tolist():
            assert sampler.vp_scale_at(ms, torch.tensor(t)) == pytest.approx(1 / math.sqrt((1 - t) ** 2 + t ** 2),
                                                                               rel=1e-6)


# ---------------------------------------------------------------------------------------------- stock parity

@pytest.mark.parametrize("sampler_name,scheduler", [("euler", "simple"), ("dpmpp_2m", "beta"),
                                                    ("euler_ancestral", "normal")])
def test_one_full_view_without_sync_equals_stock_ksampler(pack, family, sampler_name, scheduler):
    lat = empty16(8, 8)
    steps = 2 if family["family"] == "flux" else 3
    ours = run_sync(pack, family, lat, window=64, stride=64, sampler_name=sampler_name, scheduler=scheduler,
                    steps=steps)
    theirs = stock(family, lat, sampler_name=sampler_name, scheduler=scheduler, steps=steps)
    assert torch.isfinite(theirs).all() and theirs.abs().mean() > 0
    assert torch.allclose(ours, theirs, atol=1e-5 * theirs.abs().max().item(), rtol=0)
