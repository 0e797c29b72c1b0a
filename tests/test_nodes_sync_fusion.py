"""Fusion options (uniform / gaussian / spot), rectangular views and the SyncDiffusion Model Patch, on real ComfyUI
with the tiny random SD1.5 fixture.

Oracles, written here independently of sync_core: a plain Euler MultiDiffusion loop over explicit view lists with
per-view weights (sync off), the official DDIM loop of tests/oracles/official_loop.py with view weights / per-step
views (sync on), and the pack's own KSampler for the patch (stock KSampler + patch == pack KSampler at w=0).
"""

from __future__ import annotations

import math

import pytest
import torch
from model_fixtures import cfg_eps, empty_latent, rel_err, sync_ksampler
from oracles.official_loop import official_sample

from comfy_harness import run_node, stock_node

PATCH_ID = "SDL3D_SyncDiffusionModelPatch"
SEED, STEPS, CFG = 3, 3, 5.0


# ------------------------------------------------------------------ plain oracles (independent of sync_core)
def gaussian(h: int, w: int) -> torch.Tensor:
    """Mixture of Diffusers weights written out: var 0.01, midpoints h/2 (rows) and (w-1)/2 (columns)."""
    var = 0.01
    ys = [math.exp(-((y - h / 2) ** 2) / (h * h) / (2 * var)) / math.sqrt(2 * math.pi * var) for y in range(h)]
    xs = [math.exp(-((x - (w - 1) / 2) ** 2) / (w * w) / (2 * var)) / math.sqrt(2 * math.pi * var) for x in range(w)]
    return torch.tensor([[a * b for b in xs] for a in ys], dtype=torch.float32)


def spot_views(step, steps, seed, size_hw, window_hw, stride_hw, circular):
    """SpotDiffusion grid of one step, written out: shifts drawn rows-then-columns from one seeded generator; the
    circular x axis rolls the offsets; on a plain axis every lattice window ``shift + k * stride`` that meets the
    image is evaluated as the window clamped inside it and weighted 1 on its part inside the image only.
    Returns ``[(row, col, weight [h, w])]``."""
    g = torch.Generator().manual_seed(seed)
    dy = torch.randint(0, stride_hw[0], (steps,), generator=g)[step].item()
    dx = torch.randint(0, stride_hw[1], (steps,), generator=g)[step].item()
    axes = []
    for size, win, stride, shift, wrap in (
        (size_hw[0], window_hw[0], stride_hw[0], dy, False),
        (size_hw[1], window_hw[1], stride_hw[1], dx, circular),
    ):
        masks = {}
        if wrap:
            n = math.ceil(size / stride)
            for k in range(n):
                masks[((k * size) // n + shift) % size] = [1.0] * win
        else:
            for k in range(-size, size):
                o = shift + k * stride
                if o + win <= 0 or o >= size:
                    continue
                at = min(max(o, 0), size - win)
                mask = masks.setdefault(at, [0.0] * win)
                for x in range(max(o, 0), min(o + win, size)):
                    mask[x - at] += 1
        axes.append(sorted(masks.items()))
    return [(r, c, torch.tensor([[a * b for b in mc] for a in mr])) for r, mr in axes[0] for c, mc in axes[1]]


def plain_euler(plain, sd, lat, views_at, window_hw, weights=None, sigmas=None):
    """MultiDiffusion Euler loop: per step, every view (r, c) (columns wrap) is denoised with CFG and merged by
    weight; returns the final latent in ComfyUI's (unscaled) latent space."""
    import comfy.sample
    import comfy.samplers

    ms = plain["model_sampling"]
    sigmas = comfy.samplers.calculate_sigmas(ms, "normal", STEPS) if sigmas is None else sigmas
    x = comfy.sample.prepare_noise(lat["samples"], SEED) * (1 + sigmas[0] ** 2) ** 0.5  # max_denoise scaling
    eps_fn = cfg_eps(plain, sd, CFG)
    wh, ww = window_hw
    width = x.shape[-1]
    with torch.no_grad():
        for i in range(len(sigmas) - 1):
            s, s_next = sigmas[i], sigmas[i + 1]
            value, count = torch.zeros_like(x), torch.zeros_like(x)
            for r, c, *own in views_at(i):  # (r, c) or (r, c, that view's weights)
                w = own[0] if own else torch.ones(wh, ww) if weights is None else weights
                cols = [(c + k) % width for k in range(ww)]
                xv = x[..., r : r + wh, cols]
                denoised = xv - s * eps_fn(xv / (1 + s**2) ** 0.5, ms.timestep(s))
                for k, col in enumerate(cols):
                    value[..., r : r + wh, col] += w[:, k] * denoised[..., k]
                    count[..., r : r + wh, col] += w[:, k]
            x = x + (s_next - s) * (x - value / count) / s
    return x / plain["scale"]


def grid(size_hw, window_hw, stride_hw, circular=False):
    rows = list(range(0, size_hw[0] - window_hw[0] + 1, stride_hw[0]))
    if circular:
        n = math.ceil(size_hw[1] / stride_hw[1])
        cols = [(k * size_hw[1]) // n for k in range(n)]
    else:
        cols = list(range(0, size_hw[1] - window_hw[1] + 1, stride_hw[1]))
    return [(r, c) for r in rows for c in cols]


def patched(pack, model, **kw):
    params = dict(window=64, stride=32, circular=False, view_batch_size=1)
    params.update(kw)
    return run_node(pack.by_id[PATCH_ID], model=model, **params)[0]


def stock(model, sd, lat, node="KSampler", **kw):
    params = dict(
        model=model,
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=lat,
        cfg=CFG,
        sampler_name="euler",
        scheduler="normal",
    )
    if node == "KSampler":
        params.update(seed=SEED, steps=STEPS, denoise=1.0)
    else:
        params.update(
            add_noise="enable",
            noise_seed=SEED,
            steps=STEPS,
            start_at_step=0,
            end_at_step=10000,
            return_with_leftover_noise="disable",
        )
    params.update(kw)
    return run_node(stock_node(node), **params)[0]["samples"]


# ------------------------------------------------------------------ sync off: fusion vs the plain loop
def test_gaussian_fusion_on_rectangular_views_equals_the_plain_weighted_loop(pack, sd, plain, comfy):
    lat = empty_latent(16, 24)
    ours = sync_ksampler(pack, sd, lat, window=64, stride=32, window_height=96, stride_height=32, fusion="gaussian")
    views = grid((16, 24), (12, 8), (4, 4))
    expected = plain_euler(plain, sd, lat, lambda i: views, (12, 8), gaussian(12, 8))
    assert rel_err(ours, expected) < 1e-5
    uniform = sync_ksampler(pack, sd, lat, window=64, stride=32, window_height=96, stride_height=32)
    assert rel_err(uniform, expected) > 1e-3, "the weights must matter"


@pytest.mark.parametrize("circular", [False, True])
def test_spot_fusion_equals_the_plain_shifted_grid_loop(pack, sd, plain, comfy, circular):
    lat = empty_latent(16, 24)
    ours = sync_ksampler(pack, sd, lat, window=64, stride=64, fusion="spot", circular=circular)
    views_at = lambda i: spot_views(i, STEPS, SEED, (16, 24), (8, 8), (8, 8), circular)  # noqa: E731
    assert any([v[:2] for v in views_at(i)] != [v[:2] for v in views_at(0)] for i in range(STEPS)), "must shift"
    expected = plain_euler(plain, sd, lat, views_at, (8, 8))
    assert rel_err(ours, expected) < 1e-5


def test_window_larger_than_the_image_is_clamped(pack, sd):
    lat = empty_latent(8, 24)
    clamped = sync_ksampler(pack, sd, lat, window=128, stride=32)  # 16 latent rows > 8: clamped to 8
    explicit = sync_ksampler(pack, sd, lat, window=128, stride=32, window_height=64)
    assert torch.equal(clamped, explicit)


# ------------------------------------------------------------------ sync on: fusion vs the official DDIM loop
@pytest.mark.parametrize("fusion", ["gaussian", "spot"])
def test_fusion_with_sync_matches_the_official_ddim_loop_with_weights(
    pack, sd, plain, lpips_alex, smooth_vae, comfy, fusion
):
    import comfy.sample
    from diffusers import DDIMScheduler

    lat, steps, weight, decay, sync_steps = empty_latent(8, 24), 4, 1000.0, 0.9, 2
    stride_px = 32 if fusion == "gaussian" else 64
    ours = sync_ksampler(
        pack,
        sd,
        lat,
        window=64,
        stride=stride_px,
        steps=steps,
        cfg=CFG,
        scheduler="ddim_uniform",
        sync_weight=weight,
        sync_decay=decay,
        sync_steps=sync_steps,
        lpips=lpips_alex,
        vae=smooth_vae,
        fusion=fusion,
    )
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
    start = comfy.sample.prepare_noise(lat["samples"], SEED) * sigma0 / (1 + sigma0**2) ** 0.5
    decoder = smooth_vae.first_stage_model
    decode = lambda z: ((decoder.decode(z / plain["scale"])[:, :3] + 1) / 2).clamp(0, 1)  # noqa: E731
    as_slices = lambda cells: [(r, r + 8, c, c + 8) for r, c, *_ in cells]  # noqa: E731
    kwargs = dict(
        window=8,
        stride=stride_px // 8,
        sync_weight=weight,
        sync_decay_rate=decay ** (50 / steps),
        sync_freq=1,
        sync_thres=sync_steps,
    )
    if fusion == "gaussian":
        kwargs.update(views=as_slices(grid((8, 24), (8, 8), (4, 4))), view_weights=gaussian(8, 8))
    else:
        spot = lambda i: spot_views(i, steps, SEED, (8, 24), (8, 8), (8, 8), False)  # noqa: E731
        kwargs.update(views_fn=lambda i: (as_slices(spot(i)), [w for *_, w in spot(i)]))
    oracle = official_sample(
        cfg_eps(plain, sd, CFG), decode, lambda a, b: lpips_alex.model(a, b), scheduler, start, steps, **kwargs
    )
    assert rel_err(ours, oracle / plain["scale"]) < 1e-4


# ------------------------------------------------------------------ the MODEL patch
@pytest.mark.parametrize("fusion,circular", [("uniform", False), ("gaussian", True), ("spot", True)])
def test_stock_ksampler_with_the_patch_equals_the_pack_ksampler_without_sync(pack, sd, fusion, circular):
    lat = empty_latent(8, 24)
    model = patched(pack, sd["model"], fusion=fusion, circular=circular, stride=32 if fusion != "spot" else 64)
    ours = sync_ksampler(pack, sd, lat, fusion=fusion, circular=circular, stride=32 if fusion != "spot" else 64)
    theirs = stock(model, sd, lat)
    assert torch.allclose(theirs, ours, atol=1e-6, rtol=0), (theirs - ours).abs().max()


def test_patch_composes_with_ksampler_advanced_and_leaves_the_model_alone(pack, sd):
    lat = empty_latent(8, 24)
    before = stock(sd["model"], sd, lat)
    model = patched(pack, sd["model"], fusion="gaussian", window=64, window_height=64)
    with_patch = stock(model, sd, lat)
    advanced = stock(model, sd, lat, node="KSamplerAdvanced")
    assert torch.allclose(advanced, with_patch, atol=1e-6, rtol=0)
    assert rel_err(with_patch, before) > 1e-3, "the patch must change the sampling"
    assert torch.equal(stock(sd["model"], sd, lat), before), "the input model must be unchanged"
    assert not sd["model"].get_wrappers("sampler_sample", "sdl3d_view_tiler")


def test_patch_refuses_bad_geometry_clearly(pack, sd):
    with pytest.raises(ValueError, match="SyncDiffusion Model Patch: input 'stride_height'.*Fix:"):
        patched(pack, sd["model"], window_height=64, stride_height=128)


def test_the_sync_sampler_nodes_ignore_the_patch(pack, sd):
    lat = empty_latent(8, 24)
    model = patched(pack, sd["model"], fusion="spot", window=64, stride=64)
    assert torch.equal(sync_ksampler(pack, {**sd, "model": model}, lat), sync_ksampler(pack, sd, lat))
