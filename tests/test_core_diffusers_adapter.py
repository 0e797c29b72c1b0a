"""sync_core.diffusers_adapter vs the independent official-loop oracle, on tiny random diffusers models.

The models run in float64 so that the comparison measures the algorithm, not float32 noise amplified by the large
sync weight (random-weight LPIPS gradients are tiny, so w must be large for the sync to move the result; see the spec's
testing notes). The test's eps/decode functions are written here, independently of the adapter's.
"""

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from oracles.official_loop import official_sample

from sync_core.diffusers_adapter import decode_latents, sample_panorama, vae_scale_factor
from sync_core.perceptual import build_lpips
from sync_core.sync import SyncSchedule

TOL = 1e-4  # relative (to max |reference|)
W_SYNC = 50.0  # moves the result by ~8% here (asserted >= 100 x TOL below)
STEPS, LAT_H, LAT_W, WIN, STRIDE, CFG = 3, 8, 24, 8, 4, 5.0


def _scheduler(**kw):
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        **kw,
    )


@pytest.fixture(scope="module")
def tiny(lpips_dir):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32,),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",),
        cross_attention_dim=16,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )
    lp = build_lpips("vgg", search_dirs=[str(lpips_dir)])
    for m in (unet, vae, lp):
        m.to(torch.float64).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 1, 7, 16, generator=g, dtype=torch.float64)
    noise = torch.randn(1, 4, LAT_H, LAT_W, generator=g, dtype=torch.float64)
    return dict(unet=unet, vae=vae, lpips=lp, uncond=emb[0], cond=emb[1], noise=noise)


def _eps_fn(tiny, guidance=CFG):
    unet, uncond, cond = tiny["unet"], tiny["uncond"], tiny["cond"]

    def eps_fn(z, t):  # official CFG: UNet(cat[z, z]) with cat[uncond, cond]
        n = z.shape[0]
        out = unet(
            torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
        ).sample
        u, c = out.chunk(2)
        return u + guidance * (c - u)

    return eps_fn


def _decode_fn(tiny):
    vae = tiny["vae"]
    return lambda z: (vae.decode(z / vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)


def _oracle(tiny, w, decay=0.9, thres=2, scheduler=None, noise=None):
    return official_sample(
        _eps_fn(tiny),
        _decode_fn(tiny),
        tiny["lpips"],
        scheduler or _scheduler(),
        tiny["noise"] if noise is None else noise,
        STEPS,
        window=WIN,
        stride=STRIDE,
        sync_weight=w,
        sync_decay_rate=decay,
        sync_freq=1,
        sync_thres=thres,
    )


def _adapter(tiny, w, decay=0.9, steps=2, reference_steps=0, scheduler=None, **kw):
    kw.setdefault("latents", tiny["noise"])
    return sample_panorama(
        tiny["unet"],
        tiny["vae"],
        scheduler or _scheduler(),
        (tiny["uncond"], tiny["cond"]),
        LAT_H * 2,
        LAT_W * 2,
        window=WIN,
        stride=STRIDE,
        schedule=SyncSchedule(weight=w, decay=decay, steps=steps, reference_steps=reference_steps),
        guidance_scale=CFG,
        lpips=tiny["lpips"],
        num_inference_steps=STEPS,
        **kw,
    )


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def oracle_runs(tiny):
    return {w: _oracle(tiny, w) for w in (0.0, W_SYNC)}


def test_vae_factor(tiny):
    assert vae_scale_factor(tiny["vae"]) == 2


@pytest.mark.parametrize("view_batch_size", [1, 3])
def test_adapter_equals_official_loop_with_sync(tiny, oracle_runs, view_batch_size):
    noise_before = tiny["noise"].clone()
    ref, no_sync = oracle_runs[W_SYNC], oracle_runs[0.0]
    moved = _rel(ref, no_sync)
    assert moved >= 100 * TOL, f"sync moves the result by only {moved:.2e}: the comparison could not see it"
    out = _adapter(tiny, W_SYNC, view_batch_size=view_batch_size)
    assert out.shape == (1, 4, LAT_H, LAT_W)
    assert _rel(out, ref) <= TOL
    assert torch.equal(tiny["noise"], noise_before)


def test_zero_weight_equals_oracle_and_plain_multidiffusion(tiny, oracle_runs):
    out = _adapter(tiny, 0.0, view_batch_size=2)
    assert _rel(out, oracle_runs[0.0]) <= TOL
    # plain MultiDiffusion loop (omerbt/MultiDiffusion panorama.py), written here
    sched = _scheduler()
    sched.set_timesteps(STEPS)
    eps_fn = _eps_fn(tiny)
    x = tiny["noise"].clone()
    lefts = range(0, LAT_W - WIN + 1, STRIDE)
    with torch.no_grad():
        for t in sched.timesteps:
            value, count = torch.zeros_like(x), torch.zeros_like(x)
            for left in lefts:
                z = x[..., :, left : left + WIN]
                value[..., :, left : left + WIN] += sched.step(eps_fn(z, t), t, z).prev_sample
                count[..., :, left : left + WIN] += 1
            x = value / count
    assert _rel(out, x) <= TOL


def test_schedule_rescaling_matches_official_with_equivalent_decay(tiny):
    # k = i * 50 / 3  <=>  official list with decay' = decay ** (50 / 3)
    decay = 0.9
    out = _adapter(tiny, W_SYNC, decay=decay, steps=3, reference_steps=50)
    ref = _oracle(tiny, W_SYNC, decay=decay ** (50 / STEPS), thres=3)
    assert _rel(out, ref) <= TOL
    # the rescaling is visible (measured 8e-3: later sync steps move less than the first, which both share)
    assert _rel(ref, _oracle(tiny, W_SYNC, decay=decay, thres=3)) > 20 * TOL


def test_v_prediction_through_ddim(tiny):
    sched = _scheduler(prediction_type="v_prediction")
    out = _adapter(tiny, W_SYNC, scheduler=sched, view_batch_size=4)
    ref = _oracle(tiny, W_SYNC, scheduler=_scheduler(prediction_type="v_prediction"))
    assert _rel(out, ref) <= TOL
    assert _rel(ref, _oracle(tiny, 0.0, scheduler=_scheduler(prediction_type="v_prediction"))) >= 100 * TOL


def test_circular_is_roll_equivariant_with_shifted_anchor(tiny):
    base = _adapter(tiny, W_SYNC, circular=True, anchor=1, view_batch_size=3)
    rolled = _adapter(
        tiny, W_SYNC, circular=True, anchor=3, view_batch_size=3, latents=torch.roll(tiny["noise"], 2 * STRIDE, dims=-1)
    )
    assert _rel(rolled, torch.roll(base, 2 * STRIDE, dims=-1)) <= TOL
    # differs from the non-circular grid (the wrap views are really used)
    assert _rel(base, _adapter(tiny, W_SYNC, anchor=1)) > 100 * TOL


def test_batch_samples_are_independent(tiny):
    g = torch.Generator().manual_seed(4)
    other = torch.randn(1, 4, LAT_H, LAT_W, generator=g, dtype=torch.float64)
    both = _adapter(tiny, W_SYNC, latents=torch.cat([tiny["noise"], other]), view_batch_size=2)
    single = _adapter(tiny, W_SYNC, latents=other)
    assert _rel(both[1:], single) <= TOL


def test_refusals(tiny):
    with pytest.raises(TypeError, match="DDIMScheduler"):
        _adapter(tiny, W_SYNC, scheduler=DPMSolverMultistepScheduler())
    with pytest.raises(ValueError, match="no lpips"):
        sample_panorama(
            tiny["unet"],
            tiny["vae"],
            _scheduler(),
            (tiny["uncond"], tiny["cond"]),
            16,
            48,
            window=8,
            stride=4,
            schedule=SyncSchedule(weight=1.0),
            lpips=None,
            latents=tiny["noise"],
            num_inference_steps=2,
        )
    with pytest.raises(ValueError, match="multiples"):
        sample_panorama(
            tiny["unet"], tiny["vae"], _scheduler(), (tiny["uncond"], tiny["cond"]), 17, 48, window=8, stride=4
        )
    with pytest.raises(ValueError, match="latents must be"):
        _adapter(tiny, 0.0, latents=torch.zeros(1, 4, 8, 20, dtype=torch.float64))
    with pytest.raises(ValueError, match="larger than the latent"):
        sample_panorama(
            tiny["unet"],
            tiny["vae"],
            _scheduler(),
            (tiny["uncond"], tiny["cond"]),
            16,
            48,
            window=10,
            stride=4,
            latents=tiny["noise"],
        )


def test_autoencoder_tiny_decode_and_generator_path(tiny):
    torch.manual_seed(2)
    tae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    )
    tae.to(torch.float64).eval().requires_grad_(False)
    assert vae_scale_factor(tae) == 2
    img = decode_latents(tae, tiny["noise"])
    assert img.shape == (1, 3, LAT_H * 2, LAT_W * 2) and img.min() >= 0 and img.max() <= 1
    # oracle with TAESD decode (scaling_factor 1.0): same algorithm, different decoder
    ref = official_sample(
        _eps_fn(tiny),
        lambda z: (tae.decode(z).sample / 2 + 0.5).clamp(0, 1),
        tiny["lpips"],
        _scheduler(),
        tiny["noise"],
        STEPS,
        window=WIN,
        stride=STRIDE,
        sync_weight=W_SYNC * 20,
        sync_decay_rate=0.9,
        sync_thres=2,
    )
    out = sample_panorama(
        tiny["unet"],
        tae,
        _scheduler(),
        (tiny["uncond"], tiny["cond"]),
        16,
        48,
        window=WIN,
        stride=STRIDE,
        schedule=SyncSchedule(weight=W_SYNC * 20, decay=0.9, steps=2, reference_steps=0),
        guidance_scale=CFG,
        lpips=tiny["lpips"],
        num_inference_steps=STEPS,
        latents=tiny["noise"],
    )
    assert _rel(out, ref) <= TOL
    # generator path: float32 noise drawn on CPU from the generator, like torch.randn(..., generator=g)
    g1 = torch.Generator().manual_seed(123)
    expected_noise = torch.randn((1, 4, LAT_H, LAT_W), generator=torch.Generator().manual_seed(123))
    a = sample_panorama(
        tiny["unet"],
        tiny["vae"],
        _scheduler(),
        (tiny["uncond"], tiny["cond"]),
        16,
        48,
        window=WIN,
        stride=STRIDE,
        schedule=SyncSchedule(weight=0.0),
        num_inference_steps=2,
        generator=g1,
    )
    b = sample_panorama(
        tiny["unet"],
        tiny["vae"],
        _scheduler(),
        (tiny["uncond"], tiny["cond"]),
        16,
        48,
        window=WIN,
        stride=STRIDE,
        schedule=SyncSchedule(weight=0.0),
        num_inference_steps=2,
        latents=expected_noise,
    )
    assert torch.equal(a, b)
