"""Benchmark: a SyncDiffusion step vs a plain MultiDiffusion step, side by side, with the diffusers adapter.

Both variants run the same loop (sync_core.diffusers_adapter.sample_panorama) on the same random-weight models; the
sync variant syncs on every step (official recipe: anchor x0 image, per-view UNet+VAE+LPIPS forward/backward, second
UNet pass), the plain one has weight 0 (MultiDiffusion). Runs are interleaved (plain, sync, plain, sync, ...) and the
medians are compared; the printed ratio is sync-step time / plain-step time.

Usage:
    .venv/bin/python scripts/bench_sync_core.py                       # tiny models, CPU (seconds)
    .venv/bin/python scripts/bench_sync_core.py --preset sd2 --device cuda --height 512 --width 1024 --stride 16
Options: --preset tiny|sd2 (sd2 = SD2-base-shaped UNet/VAE, random weights, 865M+84M params), --lpips vgg|alex,
--view-batch N, --steps N, --repeats N, --dtype float32|float16 (models only; latents stay float32).
LPIPS backbones: random fixture files (tests/fixtures/sync_fixtures.py) under .cache/fixtures/models/lpips,
or --lpips-dir. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain script (not a ComfyUI process): the pack's cores are importable from the root
    sys.path.insert(0, str(REPO))

from sync_core.diffusers_adapter import sample_panorama  # noqa: E402
from sync_core.perceptual import build_lpips  # noqa: E402
from sync_core.sync import SyncSchedule  # noqa: E402


def build_models(preset: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    if preset == "tiny":
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
        ctx = (7, 16)
    elif preset == "sd2":  # stabilityai/stable-diffusion-2-base architecture (random weights)
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024,
            use_linear_projection=True,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            sample_size=512,
        )
        ctx = (77, 1024)
    else:
        raise SystemExit(f"unknown preset {preset}")
    for m in (unet, vae):
        m.eval().requires_grad_(False)
    return unet, vae, ctx


def lpips_dir(arg: str | None) -> str:
    if arg:
        return arg
    spec = importlib.util.spec_from_file_location(
        "sdl3d_sync_fixtures", REPO / "tests" / "fixtures" / "sync_fixtures.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    models = Path(os.environ.get("SDL3D_FIXTURES", REPO / ".cache" / "fixtures")) / "models"
    mod.build_sync_fixtures(models)
    return str(models / "lpips")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=["tiny", "sd2"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--height", type=int, default=None, help="pixels (tiny: 16, sd2: 512)")
    p.add_argument("--width", type=int, default=None, help="pixels (tiny: 48, sd2: 1024)")
    p.add_argument("--window", type=int, default=None, help="latent (tiny: 8, sd2: 64)")
    p.add_argument("--stride", type=int, default=None, help="latent (tiny: 4, sd2: 16)")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--view-batch", type=int, default=1)
    p.add_argument("--lpips", default="vgg", choices=["vgg", "alex"])
    p.add_argument("--lpips-dir", default=None)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tiny = a.preset == "tiny"
    height = a.height or (16 if tiny else 512)
    width = a.width or (48 if tiny else 1024)
    window = a.window or (8 if tiny else 64)
    stride = a.stride or (4 if tiny else 16)
    dtype = getattr(torch, a.dtype)
    device = torch.device(a.device)

    from diffusers import DDIMScheduler

    unet, vae, ctx = build_models(a.preset)
    unet.to(device, dtype)
    vae.to(device, dtype)
    lp = build_lpips(a.lpips, search_dirs=[lpips_dir(a.lpips_dir)]).to(device)
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(2, 1, *ctx, generator=g).to(device, dtype)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    noise = torch.randn(1, 4, height // f, width // f, generator=g).to(device)

    def run(weight: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        sample_panorama(
            unet,
            vae,
            sched,
            (emb[0], emb[1]),
            height,
            width,
            window=window,
            stride=stride,
            schedule=SyncSchedule(weight=weight, decay=0.95, steps=a.steps, reference_steps=0),
            guidance_scale=7.5,
            lpips=lp,
            latents=noise,
            num_inference_steps=a.steps,
            view_batch_size=a.view_batch,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / a.steps

    run(0.0), run(20.0)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    plain, sync = [], []
    for _ in range(a.repeats):
        plain.append(run(0.0))
        sync.append(run(20.0))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    from sync_core.views import build_view_grid

    n_views = len(build_view_grid(height // f, width // f, window, stride))
    res = dict(
        preset=a.preset,
        device=str(device),
        dtype=a.dtype,
        height=height,
        width=width,
        window=window,
        stride=stride,
        views=n_views,
        view_batch=a.view_batch,
        lpips=a.lpips,
        steps=a.steps,
        repeats=a.repeats,
        plain_step_s=statistics.median(plain),
        sync_step_s=statistics.median(sync),
        ratio=statistics.median(sync) / statistics.median(plain),
        peak_gib=peak,
        threads=torch.get_num_threads(),
    )
    print(f"{'variant':<22}{'s/step (median)':>16}")
    print(f"{'MultiDiffusion':<22}{res['plain_step_s']:>16.4f}")
    print(f"{'SyncDiffusion (sync)':<22}{res['sync_step_s']:>16.4f}")
    print(f"ratio sync/plain: {res['ratio']:.2f}x  ({n_views} views, {height}x{width} px, {a.preset}, {device})")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
