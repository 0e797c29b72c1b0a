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


# ---------------------------------------------------------------------------------------------- plain oracles

def x0_function(job, diffusion_model=None):
    """CFG'd x0 of a flow model written out: x0 = x - t * v, v = v_u + cfg (v_c - v_u) from a plain call of the
    diffusion model on an independent image (no ComfyUI sampling stack)."""
    model = job["model"].model
    dm = diffusion_model if diffusion_model is not None else model.diffusion_model
    ms = model.model_sampling
    (ctx_c, extra_c), (ctx_u, extra_u) = job["positive"][0], job["negative"][0]

    def velocity(x, t, ctx, pooled):
        n = x.shape[0]
        kwargs = dict(context=ctx.expand(n, -1, -1), y=pooled.expand(n, -1))
        if job["family"] == "flux":
            kwargs["guidance"] = torch.full((n,), GUIDANCE)
        return dm(x, ms.timestep(t).float().expand(n), **kwargs).float()

    def x0(x, t):
        v = velocity(x, t, ctx_c, extra_c["pooled_output"])
        if job["cfg"] != 1.0:
            v_u = velocity(x, t, ctx_u, extra_u["pooled_output"])
            v = v_u + job["cfg"] * (v - v_u)
        return x - t * v

    return x0


def start_latent(job, lat, sigma0, seed=3):
    import comfy.sample

    noise = comfy.sample.prepare_noise(lat["samples"], seed)
    clean = job["model"].model.latent_format.process_in(lat["samples"])
    return sigma0 * noise + (1 - sigma0) * clean  # flow: x_t = t e + (1 - t) x0


def flow_sigmas(job, steps, scheduler="simple"):
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(job["model"].get_model_object("model_sampling"), scheduler, steps)


def test_many_views_without_sync_equal_a_plain_multidiffusion_loop_in_flow_coordinates(pack, family):
    """Each view is its own image of the window's size (so Flux's RoPE positions are the window's), the per-view
    x0 are averaged (value / count), and Euler steps the flow latent: x <- x + (t' - t) (x - x0) / t."""
    steps = 2 if family["family"] == "flux" else 3
    lat = empty16(8, 16)  # views at columns 0, 4, 8 (window 8, stride 4)
    ours = run_sync(pack, family, lat, window=64, stride=32, steps=steps, scheduler="simple")
    sigmas = flow_sigmas(family, steps)
    x = start_latent(family, lat, sigmas[0])
    x0 = x0_function(family)
    with torch.no_grad():
        for i in range(steps):
            t, t_next = sigmas[i], sigmas[i + 1]
            value, count = torch.zeros_like(x), torch.zeros_like(x)
            for c in (0, 4, 8):
                value[..., c:c + 8] += x0(x[..., c:c + 8], t)
                count[..., c:c + 8] += 1
            x = x + (t_next - t) * (x - value / count) / t
    expected = family["model"].model.latent_format.process_out(x)
    assert rel_err(ours, expected) < 1e-5
    one_image = stock(family, lat, scheduler="simple", steps=steps)  # the whole canvas as one image
    assert rel_err(one_image, expected) > 1e-2, "views must not be one image"


@pytest.fixture(scope="module")
def plain_sd3(sd3, lpips_alex):
    """SD3 and the 16-channel VAE loaded outside inference mode (the oracle differentiates through them)."""
    import comfy.sd
    import comfy.utils
    import folder_paths

    patcher = comfy.sd.load_diffusion_model(folder_paths.get_full_path_or_raise("diffusion_models", SD3))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(folder_paths.get_full_path_or_raise("vae", FLOW_VAE)))
    fmt = sd3["model"].model.latent_format
    decoder = vae.first_stage_model

    def decode(x0):
        return ((decoder.decode(fmt.process_out(x0))[:, :3].float() + 1) / 2).clamp(0, 1)

    return dict(dm=patcher.model.diffusion_model, decode=decode, lpips=lpips_alex.model)


def test_sync_step_equals_a_plain_reimplementation_in_vp_coordinates(pack, sd3, plain_sd3, lpips_alex):
    """The paper's update z' = z - w dL/dz on the VP latent z = x / sqrt((1-t)^2 + t^2), anchor = middle view,
    then each view takes its own Euler step and the stepped views are averaged (sync at step 1 of 3)."""
    steps, weight, w_at_1 = 3, 400.0, 400.0  # sync_freq 2, sync_steps 2: only step 1 syncs; decay 1
    lat = empty16(8, 16)
    ours = run_sync(pack, sd3, lat, window=64, stride=32, steps=steps, scheduler="simple", sync_weight=weight,
                    sync_decay=1.0, sync_freq=2, sync_steps=2, lpips=lpips_alex)
    unsynced = run_sync(pack, sd3, lat, window=64, stride=32, steps=steps, scheduler="simple")
    sigmas = flow_sigmas(sd3, steps)
    x = start_latent(sd3, lat, sigmas[0])
    x0 = x0_function(sd3, plain_sd3["dm"])
    decode, lpips = plain_sd3["decode"], plain_sd3["lpips"]
    cols, anchor = (0, 4, 8), 1
    for i in range(steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        xs = [x[..., c:c + 8].clone() for c in cols]
        if i == 1:
            s = 1 / ((1 - t) ** 2 + t ** 2) ** 0.5
            with torch.no_grad():
                ref = 2 * decode(x0(xs[anchor], t)) - 1
            for v in (0, 2):
                z = (s * xs[v]).detach().requires_grad_(True)
                loss = lpips(2 * decode(x0(z / s, t)) - 1, ref).sum()
                (grad,) = torch.autograd.grad(loss, z)
                xs[v] = ((z - w_at_1 * grad) / s).detach()
        with torch.no_grad():
            value, count = torch.zeros_like(x), torch.zeros_like(x)
            for c, xv in zip(cols, xs):
                value[..., c:c + 8] += xv + (t_next - t) * (xv - x0(xv, t)) / t
                count[..., c:c + 8] += 1
            x = value / count
    expected = sd3["model"].model.latent_format.process_out(x)
    assert rel_err(ours, expected) < 1e-4
    assert rel_err(unsynced, expected) > 1e-2, "the sync must move the result >= 100x the tolerance"


def recording(model, calls):
    """A clone of `model` whose diffusion-model calls record (input, grad enabled, conds); the original is untouched."""
    patched = model.clone()

    def wrapper(apply_model, args):
        calls.append(dict(x=args["input"].detach().clone(), grad=torch.is_grad_enabled(),
                          c={k: v.detach().clone() for k, v in args["c"].items() if isinstance(v, torch.Tensor)}))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched


def test_sync_update_direction_passes_a_finite_difference_check(pack, sd3, plain_sd3, lpips_alex):
    """The update the sampler applies to a view, x' - x = -(w / s^2) dL/dx, against central differences of the
    loss L(x) = LPIPS(D(x0(x)), anchor image) along it: <dL/dx, d> = -|x' - x| s^2 / w for d = (x'-x)/|x'-x|."""
    calls, weight = [], 50.0
    job = {**sd3, "model": recording(sd3["model"], calls)}
    run_sync(pack, job, empty16(8, 16), window=64, stride=32, steps=3, scheduler="simple", sync_weight=weight,
             sync_decay=1.0, sync_freq=2, sync_steps=2, lpips=lpips_alex, view_batch_size=1)
    grad_calls = [k for k, c in enumerate(calls) if c["grad"]]
    assert len(grad_calls) == 2, "views 0 and 2 (the anchor is the middle view) take one gradient pass each"
    anchor_x = calls[grad_calls[0] - 1]["x"][:1]
    before = {0: calls[grad_calls[0]]["x"][:1], 2: calls[grad_calls[1]]["x"][:1]}
    after = {v: calls[grad_calls[1] + 1 + v]["x"][:1] for v in range(3)}
    assert torch.equal(after[1], anchor_x), "the anchor keeps its latent"
    t = flow_sigmas(sd3, 3)[1]
    s2 = 1 / ((1 - t) ** 2 + t ** 2)
    x0 = x0_function(sd3, plain_sd3["dm"])
    decode, lpips = plain_sd3["decode"], plain_sd3["lpips"]
    with torch.no_grad():
        ref = 2 * decode(x0(anchor_x, t)) - 1

        def loss(x):
            return lpips(2 * decode(x0(x, t)) - 1, ref).sum().double()

        for v in (0, 2):
            step = after[v] - before[v]
            assert step.norm() > 0
            d = step / step.norm()
            predicted = -step.norm().double() * s2 / weight
            eps = 1e-2
            finite = (loss(before[v] + eps * d) - loss(before[v] - eps * d)) / (2 * eps)
            assert finite.item() == pytest.approx(predicted.item(), rel=0.03), v
            assert finite.item() < 0, "the update must descend the loss"


def test_circular_mode_commutes_with_rolls_by_the_stride(pack, sd3, comfy):
    import comfy.sample

    node = pack.nodes.sync_nodes
    sampler = node.SyncDiffusionSampler("euler", node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", True, 2),
                                        sd3["vae"], None)
    model, lat = sd3["model"], torch.zeros(1, 16, 8, 24)
    sigmas = flow_sigmas(sd3, 3)
    noise = torch.randn(1, 16, 8, 24, generator=torch.Generator().manual_seed(5))

    def run(n, s=sampler):
        with torch.inference_mode():
            return comfy.sample.sample_custom(model, n, sd3["cfg"], s, sigmas, sd3["positive"], sd3["negative"], lat)

    base = run(noise)
    for shift in (4, 8, 16):  # multiples of the stride (4 latent cells)
        assert torch.allclose(torch.roll(base, shift, dims=-1), run(torch.roll(noise, shift, dims=-1)), atol=1e-5)
    flat = node.SyncDiffusionSampler("euler", node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", False, 1),
                                     sd3["vae"], None)
    assert not torch.allclose(run(noise, flat), base, atol=1e-4), "circular must differ from the non-wrapping grid"


# ---------------------------------------------------------------------------------------------- per-view conditioning

def test_each_flux_view_gets_window_rope_positions_guidance_and_pooled_vector(pack, flux, lpips_alex):
    """Every model call, denoising and gradient pass alike, sees view-sized images with the RoPE image positions of
    a stand-alone window-sized image (recorded at Flux's positional embedder), the FluxGuidance value and the
    pooled vector of the prompt."""
    dm = flux["model"].model.diffusion_model
    ids = []
    hook = dm.pe_embedder.register_forward_pre_hook(lambda module, args: ids.append(args[0].detach().clone()))
    try:
        calls = []
        stock({**flux, "model": recording(flux["model"], calls)}, empty16(8, 8), steps=1)
        reference_ids = ids[-1][0]
        ids.clear()
        calls.clear()
        run_sync(pack, {**flux, "model": recording(flux["model"], calls)}, empty16(8, 16), window=64, stride=32,
                 steps=2, sync_weight=200.0, sync_steps=1, lpips=lpips_alex)
    finally:
        hook.remove()
    assert any(c["grad"] for c in calls) and any(not c["grad"] for c in calls)
    assert len(ids) >= len(calls)
    for recorded in ids:
        assert all(torch.equal(row, reference_ids) for row in recorded), "RoPE ids of a window-sized image"
    pooled = flux["positive"][0][1]["pooled_output"]
    for c in calls:
        rows = c["x"].shape[0]
        assert c["x"].shape[1:] == (16, 8, 8), "each view is an independent window-sized image"
        assert torch.equal(c["c"]["guidance"], torch.full((rows,), GUIDANCE))
        assert torch.equal(c["c"]["y"], pooled.expand(rows, -1))


def test_each_sd3_view_gets_the_pooled_output_of_its_prompt(pack, sd3, lpips_alex):
    calls = []
    run_sync(pack, {**sd3, "model": recording(sd3["model"], calls)}, empty16(8, 16), window=64, stride=32, steps=2,
             sync_weight=200.0, sync_steps=1, lpips=lpips_alex, view_batch_size=2)
    pos, neg = sd3["positive"][0][1]["pooled_output"], sd3["negative"][0][1]["pooled_output"]
    assert any(c["grad"] for c in calls)
    for c in calls:
        rows = c["x"].shape[0]
        assert rows % 2 == 0 and c["x"].shape[1:] == (16, 8, 8)
        y = c["c"]["y"]
        assert {tuple(r.tolist()) for r in y} == {tuple(pos[0].tolist()), tuple(neg[0].tolist())}
        assert sum(torch.equal(r, pos[0]) for r in y) == rows // 2


def test_area_conditioning_is_cropped_per_view_on_a_flow_model(pack, sd3, lpips_alex):
    (boxed,) = run_node(stock_node("ConditioningSetArea"), conditioning=sd3["positive"], width=48, height=64, x=80,
                        y=0, strength=1.0)
    (positive,) = run_node(stock_node("ConditioningCombine"), conditioning_1=sd3["positive"], conditioning_2=boxed)
    job, lat, sync = {**sd3, "positive": positive}, empty16(8, 16), dict(steps=2, sync_weight=400.0, sync_steps=1)
    one = run_sync(pack, job, lat, view_batch_size=1, lpips=lpips_alex, **sync)
    four = run_sync(pack, job, lat, view_batch_size=4, lpips=lpips_alex, **sync)
    plain = run_sync(pack, sd3, lat, view_batch_size=1, lpips=lpips_alex, **sync)
    assert rel_err(four, one) < 2e-4 and rel_err(one, plain) > 1e-2  # batched MMDiT attention: float noise only


# ---------------------------------------------------------------------------------------------- nodes, decoder, memory

def test_flux_runs_through_both_syncdiffusion_nodes_with_sync_on(pack, flux, lpips_alex):
    lat = empty16(8, 16)
    synced = run_sync(pack, flux, lat, steps=2, sync_weight=400.0, sync_steps=1, lpips=lpips_alex)
    unsynced = run_sync(pack, flux, lat, steps=2)
    assert torch.isfinite(synced).all() and rel_err(synced, unsynced) > 1e-3
    (sampler,) = run_node(pack.by_id["SDL3D_SyncDiffusionSampler"], vae=flux["vae"], window=64, stride=32,
                          sync_weight=400.0, sync_decay=0.95, sync_freq=1, sync_steps=1, anchor="middle",
                          circular=True, view_batch_size=0, sampler_name="euler", lpips=lpips_alex)
    (guider,) = run_node(stock_node("BasicGuider"), model=flux["model"], conditioning=flux["positive"])
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=flux["model"], scheduler="simple", steps=2, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=7)
    out, _ = run_node(stock_node("SamplerCustomAdvanced"), noise=noise, guider=guider, sampler=sampler,
                      sigmas=sigmas, latent_image=lat)
    assert out["samples"].shape == (1, 16, 8, 16) and torch.isfinite(out["samples"]).all()


def test_a_vae_with_other_latent_channels_is_refused_naming_node_input_value_and_fix(pack, sd3, comfy):
    (sd_vae,) = run_node(stock_node("VAELoader"), vae_name="taesd")
    with pytest.raises(ValueError) as err:
        run_sync(pack, {**sd3, "vae": sd_vae}, empty16(8, 16))
    message = str(err.value)
    assert "SyncDiffusion KSampler" in message and "input 'vae'" in message and "4-channel" in message
    assert "16-channel" in message and "Fix:" in message and "taesd3" in message
    (sampler,) = run_node(pack.by_id["SDL3D_SyncDiffusionSampler"], vae=sd_vae, window=64, stride=32,
                          sync_weight=0.0, sync_decay=0.95, sync_freq=1, sync_steps=1, anchor="middle",
                          circular=False, view_batch_size=0, sampler_name="euler")
    with pytest.raises(ValueError, match="SyncDiffusion Sampler.*input 'vae'"):
        run_node(stock_node("SamplerCustom"), model=sd3["model"], add_noise=True, noise_seed=1, cfg=4.0,
                 positive=sd3["positive"], negative=sd3["negative"], sampler=sampler,
                 sigmas=flow_sigmas(sd3, 2), latent_image=empty16(8, 16))


def test_fast_path_decodes_with_taesd3_and_equals_the_exact_path_with_stock_taesd3(pack, sd3, lpips_alex):
    lat, sync = empty16(8, 16), dict(steps=2, sync_weight=400.0, sync_steps=1)
    (taesd3,) = run_node(stock_node("VAELoader"), vae_name="taesd3")
    fast = run_sync(pack, sd3, lat, lpips=lpips_alex, sync_fast=True, **sync)
    by_hand = run_sync(pack, {**sd3, "vae": taesd3}, lat, lpips=lpips_alex, **sync)
    exact = run_sync(pack, sd3, lat, lpips=lpips_alex, **sync)
    assert rel_err(fast, by_hand) < 1e-5 and rel_err(fast, exact) > 1e-4


def test_checkpointed_blocks_are_comfyuis_flux_and_mmdit_blocks_and_give_the_same_result(pack, flux, sd3,
                                                                                         lpips_alex):
    import comfy.ldm.flux.layers
    import comfy.ldm.modules.diffusionmodules.mmdit

    memory = pack.node_module("sync_memory")
    for name in ("DoubleStreamBlock", "SingleStreamBlock"):
        assert name in memory.CHECKPOINT_BLOCKS and hasattr(comfy.ldm.flux.layers, name)
    assert "JointBlock" in memory.CHECKPOINT_BLOCKS and hasattr(comfy.ldm.modules.diffusionmodules.mmdit, "JointBlock")
    flux_blocks = memory.checkpoint_targets(flux["model"].model.diffusion_model)
    assert [type(b).__name__ for b in flux_blocks] == ["DoubleStreamBlock"]
    sd3_blocks = memory.checkpoint_targets(sd3["model"].model.diffusion_model, sd3["vae"].first_stage_model)
    assert [type(b).__name__ for b in sd3_blocks].count("JointBlock") == 2
    from test_nodes_sync_memory import run_sampler

    lat = empty16(8, 16)
    job = {**sd3, "model": sd3["model"]}
    plain = run_sampler(pack, job, lat, sd3["vae"], lpips_alex, view_batch_size=1, gradient_checkpointing=False)
    checkpointed = run_sampler(pack, job, lat, sd3["vae"], lpips_alex, view_batch_size=1)
    assert rel_err(checkpointed, plain) < 1e-5


def test_fp8_stored_weights_run_the_gradient_pass(pack, sd3, lpips_alex):
    """UNETLoader weight_dtype fp8_e4m3fn (what a 24 GB card needs for Flux): ComfyUI's manual-cast layers upcast
    each weight per call; the sync gradient flows through them."""
    (fp8,) = run_node(stock_node("UNETLoader"), unet_name=SD3, weight_dtype="fp8_e4m3fn")
    assert fp8.model.diffusion_model.x_embedder.proj.weight.dtype == torch.float8_e4m3fn
    job, lat = {**sd3, "model": fp8}, empty16(8, 16)
    synced = run_sync(pack, job, lat, steps=2, sync_weight=400.0, sync_steps=1, lpips=lpips_alex)
    unsynced = run_sync(pack, job, lat, steps=2)
    assert torch.isfinite(synced).all() and rel_err(synced, unsynced) > 1e-3


def test_controlnet_hints_are_cropped_per_view_under_flow_sampling(pack, comfy, lpips_alex):
    """ControlNet under CONST sampling (the SD fixture + its ControlNet, patched by the stock ModelSamplingSD3 node:
    no tiny Flux/SD3 ControlNet fixture exists): one full view equals the stock KSampler, a synced panorama runs."""
    from test_nodes_sync import CKPT, empty_latent
    from test_nodes_sync_control import CONTROLNET

    model, clip, vae = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)
    (flow_model,) = run_node(stock_node("ModelSamplingSD3"), model=model, shift=3.0)
    (positive,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="a wide mountain landscape")
    (negative,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="")
    (control,) = run_node(stock_node("ControlNetLoader"), control_net_name=CONTROLNET)
    ramp = torch.linspace(0, 1, 128)
    hint = torch.stack([ramp.expand(64, 128), ramp.flip(0).expand(64, 128), (ramp * 7 % 1).expand(64, 128)],
                       dim=-1).unsqueeze(0)
    pos_c, neg_c = run_node(stock_node("ControlNetApplyAdvanced"), positive=positive, negative=negative,
                            control_net=control, image=hint[:, :, :64], strength=1.0, start_percent=0.0,
                            end_percent=1.0)
    job = dict(model=flow_model, positive=pos_c, negative=neg_c, vae=vae, cfg=5.0, family="sd15-flow")
    square = empty_latent(8, 8)
    ours = run_sync(pack, job, square, window=64, stride=64)
    theirs = stock(job, square, scheduler="normal")
    without = stock({**job, "positive": positive, "negative": negative}, square, scheduler="normal")
    assert torch.allclose(ours, theirs, atol=1e-6) and not torch.allclose(theirs, without, atol=1e-3)
    pos_w, neg_w = run_node(stock_node("ControlNetApplyAdvanced"), positive=positive, negative=negative,
                            control_net=control, image=hint, strength=1.0, start_percent=0.0, end_percent=1.0)
    wide = run_sync(pack, {**job, "positive": pos_w, "negative": neg_w}, empty_latent(8, 16), steps=2,
                    sync_weight=200.0, sync_steps=1, lpips=lpips_alex)
    assert wide.shape == (1, 4, 8, 16) and torch.isfinite(wide).all()
