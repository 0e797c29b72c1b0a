"""SyncDiffusion nodes on real ComfyUI objects (tiny random SD1.5 fixture), against independent oracles.

Oracles: the stock KSampler (one view, no sync), a plain MultiDiffusion Euler loop written here (many views, w = 0),
and tests/oracles/official_loop.py, a plain re-implementation of the official DDIM loop (w > 0).
"""

from __future__ import annotations

import copy
import re

import pytest
import torch
from model_fixtures import cfg_eps, empty_latent, rel_err, stock_ksampler, sync_ksampler
from oracles.official_loop import official_sample

from comfy_harness import run_node, stock_node


@pytest.mark.parametrize(
    "sampler_name,scheduler",
    [
        ("euler", "normal"),
        ("dpmpp_2m", "karras"),
        ("euler_ancestral", "simple"),
        ("dpmpp_sde", "normal"),
        ("uni_pc", "ddim_uniform"),
    ],
)
def test_one_full_view_without_sync_equals_stock_ksampler(pack, sd, sampler_name, scheduler):
    lat = empty_latent(8, 8)
    ours = sync_ksampler(pack, sd, lat, window=64, stride=64, sampler_name=sampler_name, scheduler=scheduler)
    stock = stock_ksampler(sd, lat, sampler_name=sampler_name, scheduler=scheduler)
    assert torch.allclose(ours, stock, atol=1e-6, rtol=0)


def test_many_views_without_sync_equal_a_plain_multidiffusion_euler_loop(pack, sd, plain, comfy):
    import comfy.sample
    import comfy.samplers

    lat, cfg, steps = empty_latent(8, 24), 5.0, 3
    ours = sync_ksampler(pack, sd, lat, window=64, stride=32, steps=steps, cfg=cfg)
    ms = plain["model_sampling"]
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", steps)
    x = comfy.sample.prepare_noise(lat["samples"], 3) * sigmas[0]  # sigma_max: max_denoise scaling
    x = x * (1 + sigmas[0] ** 2) ** 0.5 / sigmas[0]
    eps_fn = cfg_eps(plain, sd, cfg)
    views = [(0, 8, c, c + 8) for c in (0, 4, 8, 12, 16)]
    with torch.no_grad():
        for i in range(steps):
            s, s_next = sigmas[i], sigmas[i + 1]
            value, count = torch.zeros_like(x), torch.zeros_like(x)
            for h0, h1, w0, w1 in views:
                xv = x[..., h0:h1, w0:w1]
                denoised = xv - s * eps_fn(xv / (1 + s**2) ** 0.5, ms.timestep(s))
                value[..., h0:h1, w0:w1] += denoised
                count[..., h0:h1, w0:w1] += 1
            denoised = value / count
            x = x + (s_next - s) * (x - denoised) / s
    expected = x / plain["scale"]
    assert rel_err(ours, expected) < 1e-5


def test_sync_matches_the_official_ddim_loop(pack, sd, plain, lpips_alex, smooth_vae, comfy):
    """w > 0, euler + ddim_uniform == the official per-view DDIM loop (diffusers DDIMScheduler) within 1e-4."""
    import comfy.sample
    from diffusers import DDIMScheduler

    lat, cfg, steps, weight, decay, sync_steps = empty_latent(8, 24), 5.0, 4, 1000.0, 0.9, 2
    ours = sync_ksampler(
        pack,
        sd,
        lat,
        window=64,
        stride=32,
        steps=steps,
        cfg=cfg,
        scheduler="ddim_uniform",
        sync_weight=weight,
        sync_decay=decay,
        sync_steps=sync_steps,
        lpips=lpips_alex,
        vae=smooth_vae,
    )
    ours_w0 = sync_ksampler(pack, sd, lat, window=64, stride=32, steps=steps, cfg=cfg, scheduler="ddim_uniform")

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        prediction_type="epsilon",
    )
    ms = plain["model_sampling"]
    scheduler.set_timesteps(steps)
    sigma0 = ms.sigma(scheduler.timesteps[:1].float())[0]
    # ComfyUI scales the initial noise by sigma(t0) (not max_denoise) and ends at sigma = 0 (alpha_prev = 1 above).
    start = comfy.sample.prepare_noise(lat["samples"], 3) * sigma0 / (1 + sigma0**2) ** 0.5
    decoder = smooth_vae.first_stage_model
    decode = lambda z: ((decoder.decode(z / plain["scale"])[:, :3] + 1) / 2).clamp(0, 1)  # noqa: E731
    model = lpips_alex.model
    oracle = official_sample(
        cfg_eps(plain, sd, cfg),
        decode,
        lambda a, b: model(a, b),
        scheduler,
        start,
        steps,
        window=8,
        stride=4,
        sync_weight=weight,
        sync_decay_rate=decay ** (50 / steps),
        sync_freq=1,
        sync_thres=sync_steps,
    )
    expected = oracle / plain["scale"]
    assert rel_err(ours, expected) < 1e-4
    assert rel_err(ours_w0, expected) > 1e-2, "the sync must move the result >= 100x the tolerance"


def test_circular_views_commute_with_rolls_by_the_stride(pack, sd, comfy):
    import comfy.sample
    import comfy.samplers

    node = pack.nodes.sync.ksampler_nodes
    settings = node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", True, 2)
    sampler = node.SyncDiffusionSampler("euler", settings, sd["vae"], None)
    model, lat = sd["model"], torch.zeros(1, 4, 8, 24)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    noise = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(5))

    def run(n):
        with torch.inference_mode():
            return comfy.sample.sample_custom(model, n, 5.0, sampler, sigmas, sd["positive"], sd["negative"], lat)

    base, rolled = run(noise), run(torch.roll(noise, 8, dims=-1))
    assert torch.allclose(torch.roll(base, 8, dims=-1), rolled, atol=1e-5)
    plain_views = node.SyncDiffusionSampler(
        "euler", node.sync_settings("test", 64, 32, 0.0, 0.95, 1, 10, "middle", False, 1), sd["vae"], None
    )
    with torch.inference_mode():
        flat = comfy.sample.sample_custom(model, noise, 5.0, plain_views, sigmas, sd["positive"], sd["negative"], lat)
    assert not torch.allclose(flat, base, atol=1e-4), "circular must differ from the non-wrapping grid"


def multidiffusion_model(model, col_views):
    """Plain MultiDiffusion written here on stock ComfyUI: a clone of `model` whose every evaluation runs the model on
    each view (column range of the latent) and averages the denoised predictions (value / count)."""
    model = model.clone()

    def wrapper(apply_model, args):
        x, t, c = args["input"], args["timestep"], args["c"]
        value, count = torch.zeros_like(x), torch.zeros_like(x)
        for c0, c1 in col_views:
            value[..., c0:c1] += apply_model(x[..., c0:c1], t, **c)
            count[..., c0:c1] += 1
        return value / count

    model.set_model_unet_function_wrapper(wrapper)
    return model


def test_every_comfyui_sampler_syncs_and_equals_stock_multidiffusion_without_sync(pack, sd, lpips_alex, comfy):
    """For each sampler of ComfyUI, on two overlapping views (8x12 latent, window 8, stride 4): w = 0 equals the stock
    KSampler on the test's own MultiDiffusion model, and w > 0 moves the result far beyond that tolerance.

    The order each sampler runs at: with w = 0 there are no sync steps, so every sampler runs exactly as stock (its
    full order, history included). With w > 0 each sync step starts a new segment, so a multistep sampler (dpmpp_2m,
    deis, ipndm, lms, uni_pc, ...) takes its first-order start step at every sync step and its full order only after
    them; tests/test_nodes_sync_multistep.py shows that for dpmpp_2m against a plain re-implementation."""
    import comfy.samplers

    lat, steps = empty_latent(8, 12), 3
    reference = dict(sd, model=multidiffusion_model(sd["model"], [(0, 8), (4, 12)]))
    plain = stock_ksampler(sd, lat, steps=steps)
    assert rel_err(stock_ksampler(reference, lat, steps=steps), plain) > 1e-2, "the reference must tile"
    for name in comfy.samplers.KSampler.SAMPLERS:
        w0 = sync_ksampler(pack, sd, lat, window=64, stride=32, steps=steps, sampler_name=name)
        stock = stock_ksampler(reference, lat, steps=steps, sampler_name=name)
        synced = sync_ksampler(
            pack,
            sd,
            lat,
            window=64,
            stride=32,
            steps=steps,
            sampler_name=name,
            sync_weight=50.0,
            sync_steps=2,
            lpips=lpips_alex,
        )
        assert synced.shape == (1, 4, 8, 12) and torch.isfinite(synced).all(), name
        assert rel_err(w0, stock) < 1e-5, f"{name}: w = 0 differs from stock MultiDiffusion"
        assert rel_err(synced, w0) > 1e-3, f"{name}: sync did not move the result"


def test_batch_and_img2img_and_view_batching(pack, sd, lpips_alex):
    lat = {"samples": torch.randn(2, 4, 8, 16, generator=torch.Generator().manual_seed(1))}
    one = sync_ksampler(pack, sd, lat, denoise=0.6, sync_weight=500.0, sync_steps=2, lpips=lpips_alex)
    batched = sync_ksampler(
        pack, sd, lat, denoise=0.6, sync_weight=500.0, sync_steps=2, lpips=lpips_alex, view_batch_size=3
    )
    assert one.shape == (2, 4, 8, 16) and torch.allclose(one, batched, atol=1e-4)


def test_sampler_node_composes_with_sampler_custom_advanced(pack, sd, lpips_alex):
    (sampler,) = run_node(
        pack.by_id["SDL3D_SyncDiffusionSampler"],
        vae=sd["vae"],
        window=64,
        stride=32,
        sync_weight=200.0,
        sync_decay=0.95,
        sync_freq=1,
        sync_steps=2,
        anchor="first",
        circular=True,
        view_batch_size=2,
        sampler_name="dpmpp_2m",
        lpips=lpips_alex,
    )
    (guider,) = run_node(
        stock_node("CFGGuider"), model=sd["model"], positive=sd["positive"], negative=sd["negative"], cfg=4.0
    )
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=sd["model"], scheduler="karras", steps=3, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=7)
    out, denoised = run_node(
        stock_node("SamplerCustomAdvanced"),
        noise=noise,
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image=empty_latent(8, 16),
    )
    assert out["samples"].shape == (1, 4, 8, 16) and torch.isfinite(out["samples"]).all()


def test_inputs_and_model_are_unchanged_and_stock_sampling_is_bit_identical_after(pack, sd, lpips_alex):
    lat = empty_latent(8, 16)
    before = stock_ksampler(sd, lat, seed=11)
    options_before = copy.deepcopy({k: v for k, v in sd["model"].model_options.items() if k != "transformer_options"})
    cond_before = sd["positive"][0][0].clone()
    lat_before = lat["samples"].clone()
    sync_ksampler(pack, sd, lat, sync_weight=500.0, sync_steps=2, lpips=lpips_alex)
    assert torch.equal(stock_ksampler(sd, lat, seed=11), before)
    assert {k: v for k, v in sd["model"].model_options.items() if k != "transformer_options"} == options_before
    assert torch.equal(sd["positive"][0][0], cond_before) and torch.equal(lat["samples"], lat_before)
    assert set(lat) == {"samples"}


def test_interrupted_run_leaves_the_model_as_it_was(pack, sd, lpips_alex):
    import comfy.model_management

    lat = empty_latent(8, 16)
    before = stock_ksampler(sd, lat, seed=12)
    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sync_ksampler(pack, sd, lat, sync_weight=500.0, sync_steps=2, lpips=lpips_alex)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert "sampler_calc_cond_batch_function" not in sd["model"].model_options
    assert torch.equal(stock_ksampler(sd, lat, seed=12), before)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (dict(window_height=64, stride_height=128), "input 'stride_height' = 128"),
        (dict(stride=0), "input 'stride' = 0"),
        (dict(stride=96), "input 'stride' = 96"),
        (dict(window=60), "input 'window' = 60"),
    ],
)
def test_bad_geometry_is_refused_with_a_clear_error(pack, sd, overrides, needle):
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, sd, empty_latent(8, 16), **overrides)
    assert needle in str(err.value) and "SyncDiffusion KSampler" in str(err.value) and "Fix:" in str(err.value)


def test_latent_and_vae_that_do_not_match_the_model_are_refused(pack, sd, comfy):
    import comfy.sd
    import comfy.taesd.taesd

    with pytest.raises(ValueError, match="input 'latent_image'.*channels"):
        sync_ksampler(pack, sd, {"samples": torch.randn(1, 16, 8, 16)})
    with torch.inference_mode():
        state = {f"{k}": v for k, v in comfy.taesd.taesd.TAESD(latent_channels=16).state_dict().items()}
        wrong_vae = comfy.sd.VAE(sd=state)
    with pytest.raises(ValueError, match="input 'vae'.*16-channel"):
        sync_ksampler(pack, sd, empty_latent(8, 16), vae=wrong_vae)


def test_missing_lpips_weights_offline_name_the_file_and_folder(pack, sd, comfy, monkeypatch, tmp_path):
    """The folder is named relative to ComfyUI's models directory, once, and no server path is shown."""
    import folder_paths

    models = tmp_path / "models"
    (models / "lpips").mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "models_dir", str(models))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "lpips", ([str(models / "lpips")], {".pth"}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, sd, empty_latent(8, 16), sync_weight=20.0)
    message = str(err.value)
    assert "vgg16-397923af.pth" in message and "input 'lpips'" in message
    assert message.count("models/lpips") == 1 and "Fix: put torchvision's 'vgg16-397923af.pth' into" in message
    assert str(tmp_path) not in message, message
    extra = [str(models / "lpips"), str(tmp_path / "elsewhere")]  # a second folder from extra_model_paths.yaml
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "lpips", (extra, {".pth"}))
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, sd, empty_latent(8, 16), sync_weight=20.0)
    assert "models/lpips (or another 'lpips' folder of extra_model_paths.yaml)" in str(err.value)
    assert str(tmp_path) not in str(err.value)


def test_v_prediction_models_sync_and_match_stock_without_sync(pack, sd, lpips_alex):
    (v_model,) = run_node(stock_node("ModelSamplingDiscrete"), model=sd["model"], sampling="v_prediction", zsnr=False)
    v_sd = {**sd, "model": v_model}
    square = empty_latent(8, 8)
    ours = sync_ksampler(pack, v_sd, square, window=64, stride=64)
    stock = run_node(
        stock_node("KSampler"),
        model=v_model,
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=square,
        seed=3,
        steps=3,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )[0]["samples"]
    assert torch.allclose(ours, stock, atol=1e-6) and not torch.allclose(stock, stock_ksampler(sd, square), atol=1e-3)
    synced = sync_ksampler(pack, v_sd, empty_latent(8, 16), sync_weight=500.0, sync_steps=2, lpips=lpips_alex)
    plain = sync_ksampler(pack, v_sd, empty_latent(8, 16))
    assert torch.isfinite(synced).all() and not torch.allclose(synced, plain, atol=1e-4)


def test_flow_matching_sampling_runs_and_matches_stock_without_sync(pack, sd, lpips_alex):
    """A flow (CONST) model sampling patched onto the SD fixture by the stock ModelSamplingSD3 node: one full view
    equals the stock KSampler, and the sync step (in VP-equivalent coordinates) runs and moves the result.
    Flux / SD3 themselves: tests/test_nodes_sync_flow.py."""
    (flow_model,) = run_node(stock_node("ModelSamplingSD3"), model=sd["model"], shift=3.0)
    flow_sd = {**sd, "model": flow_model}
    square = empty_latent(8, 8)
    ours = sync_ksampler(pack, flow_sd, square, window=64, stride=64)
    stock = run_node(
        stock_node("KSampler"),
        model=flow_model,
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=square,
        seed=3,
        steps=3,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )[0]["samples"]
    assert torch.allclose(ours, stock, atol=1e-6) and not torch.allclose(stock, stock_ksampler(sd, square), atol=1e-3)
    synced = sync_ksampler(pack, flow_sd, empty_latent(8, 16), sync_weight=500.0, sync_steps=2, lpips=lpips_alex)
    plain = sync_ksampler(pack, flow_sd, empty_latent(8, 16))
    assert torch.isfinite(synced).all() and not torch.allclose(synced, plain, atol=1e-4)


def test_progress_is_one_bar_over_the_whole_schedule_with_sync_steps(pack, sd, lpips_alex, capfd):
    """The UI bar (ComfyUI's progress hook) and the terminal bar count every step of the schedule once, in order,
    with the same total, across sync steps; the base sampler's per-segment bars stay off."""
    import comfy.utils

    seen = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: seen.append((value, total)))
    try:
        capfd.readouterr()
        sync_ksampler(pack, sd, empty_latent(8, 16), steps=5, sync_weight=200.0, sync_steps=3, lpips=lpips_alex)
        terminal = capfd.readouterr().err
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
    assert seen == [(i, 5) for i in range(1, 6)]
    bars = [line for line in terminal.replace("\r", "\n").splitlines() if re.search(r"\d+/\d+ \[", line)]
    assert bars and all(line.startswith("SyncDiffusion") and "/5 [" in line for line in bars), bars
    assert "5/5 [" in bars[-1], bars
