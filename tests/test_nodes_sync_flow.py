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
from model_fixtures import FLOW_VAE, GUIDANCE, SD3, rel_err, sync_ksampler

from comfy_harness import run_node, stock_node


def empty16(h, w, batch=1):
    return {"samples": torch.zeros(batch, 16, h, w)}


def run_sync(pack, job, lat, **overrides):
    params = dict(cfg=job["cfg"], steps=3)
    params.update(overrides)
    return sync_ksampler(pack, job, lat, **params)


def stock(job, lat, sampler_name="euler", scheduler="simple", steps=3, seed=3):
    return run_node(
        stock_node("KSampler"),
        model=job["model"],
        positive=job["positive"],
        negative=job["negative"],
        latent_image=lat,
        seed=seed,
        steps=steps,
        cfg=job["cfg"],
        sampler_name=sampler_name,
        scheduler=scheduler,
        denoise=1.0,
    )[0]["samples"]


# ---------------------------------------------------------------------------------------------- coordinates


def test_fixtures_are_detected_as_flux_and_sd3_with_flow_sampling(pack, flux, sd3):
    import comfy.model_base
    import comfy.model_sampling

    assert type(flux["model"].model) is comfy.model_base.Flux and type(sd3["model"].model) is comfy.model_base.SD3
    for job in (flux, sd3):
        ms = job["model"].get_model_object("model_sampling")
        assert isinstance(ms, comfy.model_sampling.CONST)
        assert pack.nodes.sync.sampler.sampling_kind(ms) == "flow"
        assert job["model"].get_model_object("latent_format").latent_channels == 16
    assert flux["vae"].latent_channels == 16


def test_vp_scale_reduces_to_comfyui_calculate_input_on_eps_and_v_models_bit_for_bit(pack, comfy):
    import comfy.samplers
    from model_fixtures import CKPT

    sampler = pack.nodes.sync.sampler
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

    sampler = pack.nodes.sync.sampler
    for job in (flux, sd3):
        ms = job["model"].get_model_object("model_sampling")
        sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 6)
        assert float(sigmas[0]) == pytest.approx(1.0) and float(sigmas[-1]) == 0.0
        for t in sigmas.tolist():
            assert sampler.vp_scale_at(ms, torch.tensor(t)) == pytest.approx(
                1 / math.sqrt((1 - t) ** 2 + t**2), rel=1e-6
            )


# ---------------------------------------------------------------------------------------------- stock parity


@pytest.mark.parametrize(
    "sampler_name,scheduler", [("euler", "simple"), ("dpmpp_2m", "beta"), ("euler_ancestral", "normal")]
)
def test_one_full_view_without_sync_equals_stock_ksampler(pack, family, sampler_name, scheduler):
    lat = empty16(8, 8)
    steps = 2 if family["family"] == "flux" else 3
    ours = run_sync(
        pack, family, lat, window=64, stride=64, sampler_name=sampler_name, scheduler=scheduler, steps=steps
    )
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
                value[..., c : c + 8] += x0(x[..., c : c + 8], t)
                count[..., c : c + 8] += 1
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
    ours = run_sync(
        pack,
        sd3,
        lat,
        window=64,
        stride=32,
        steps=steps,
        scheduler="simple",
        sync_weight=weight,
        sync_decay=1.0,
        sync_freq=2,
        sync_steps=2,
        lpips=lpips_alex,
    )
    unsynced = run_sync(pack, sd3, lat, window=64, stride=32, steps=steps, scheduler="simple")
    sigmas = flow_sigmas(sd3, steps)
    x = start_latent(sd3, lat, sigmas[0])
    x0 = x0_function(sd3, plain_sd3["dm"])
    decode, lpips = plain_sd3["decode"], plain_sd3["lpips"]
    cols, anchor = (0, 4, 8), 1
    for i in range(steps):
        t, t_next = sigmas[i], sigmas[i + 1]
        xs = [x[..., c : c + 8].clone() for c in cols]
        if i == 1:
            s = 1 / ((1 - t) ** 2 + t**2) ** 0.5
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
                value[..., c : c + 8] += xv + (t_next - t) * (xv - x0(xv, t)) / t
                count[..., c : c + 8] += 1
            x = value / count
    expected = sd3["model"].model.latent_format.process_out(x)
    assert rel_err(ours, expected) < 1e-4
    assert rel_err(unsynced, expected) > 1e-2, "the sync must move the result >= 100x the tolerance"


def recording(model, calls):
    """A clone of `model` whose diffusion-model calls record (input, grad enabled, conds); the original is untouched."""
    patched = model.clone()

    def wrapper(apply_model, args):
        calls.append(
            dict(
                x=args["input"].detach().clone(),
                grad=torch.is_grad_enabled(),
                c={k: v.detach().clone() for k, v in args["c"].items() if isinstance(v, torch.Tensor)},
            )
        )
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched


def test_sync_update_direction_passes_a_finite_difference_check(pack, sd3, plain_sd3, lpips_alex):
    """The update the sampler applies to a view, x' - x = -(w / s^2) dL/dx, against central differences of the
    loss L(x) = LPIPS(D(x0(x)), anchor image) along it: <dL/dx, d> = -|x' - x| s^2 / w for d = (x'-x)/|x'-x|."""
    calls, weight = [], 50.0
    job = {**sd3, "model": recording(sd3["model"], calls)}
    run_sync(
        pack,
        job,
        empty16(8, 16),
        window=64,
        stride=32,
        steps=3,
        scheduler="simple",
        sync_weight=weight,
        sync_decay=1.0,
        sync_freq=2,
        sync_steps=2,
        lpips=lpips_alex,
        view_batch_size=1,
    )
    grad_calls = [k for k, c in enumerate(calls) if c["grad"]]
    assert len(grad_calls) == 2, "views 0 and 2 (the anchor is the middle view) take one gradient pass each"
    anchor_x = calls[grad_calls[0] - 1]["x"][:1]
    before = {0: calls[grad_calls[0]]["x"][:1], 2: calls[grad_calls[1]]["x"][:1]}
    after = {v: calls[grad_calls[1] + 1 + v]["x"][:1] for v in range(3)}
    assert torch.equal(after[1], anchor_x), "the anchor keeps its latent"
    t = flow_sigmas(sd3, 3)[1]
    s2 = 1 / ((1 - t) ** 2 + t**2)
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

    node = pack.nodes.sync.ksampler_nodes
    sampler = node.SyncDiffusionSampler(
        "euler", node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", True, 2), sd3["vae"], None
    )
    model, lat = sd3["model"], torch.zeros(1, 16, 8, 24)
    sigmas = flow_sigmas(sd3, 3)
    noise = torch.randn(1, 16, 8, 24, generator=torch.Generator().manual_seed(5))

    def run(n, s=sampler):
        with torch.inference_mode():
            return comfy.sample.sample_custom(model, n, sd3["cfg"], s, sigmas, sd3["positive"], sd3["negative"], lat)

    base = run(noise)
    for shift in (4, 8, 16):  # multiples of the stride (4 latent cells)
        assert torch.allclose(torch.roll(base, shift, dims=-1), run(torch.roll(noise, shift, dims=-1)), atol=1e-5)
    flat = node.SyncDiffusionSampler(
        "euler", node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", False, 1), sd3["vae"], None
    )
    assert not torch.allclose(run(noise, flat), base, atol=1e-4), "circular must differ from the non-wrapping grid"
