"""Benchmark the SyncDiffusion KSampler inside real ComfyUI, side by side in one run, as ratios.

    python scripts/bench_syncdiffusion.py [--checkpoint NAME] [--width 768 --height 128 --window 128 --stride 64]
                                          [--steps 8 --sync-steps 2 --repeats 3 --lpips alex]

Compares, interleaved (A B C A B C ...), medians of --repeats runs:
- reference_sync: tests/oracles/official_loop.py, a plain re-implementation of the official per-view DDIM loop
  on the same UNet, decoder and LPIPS (what the official code does, minus diffusers/autocast), one view at a time;
- sync_one / sync_auto: the pack's node (euler + ddim_uniform, w > 0), one view per call / the automatic plan;
- sync_fast_auto: the same with the fast path (TAESD loss decoder, LPIPS at <= 256 px);
- multi_one / multi_auto: the node with w = 0 (plain MultiDiffusion).
Prints the ratios side by side: ours/reference, batched/one-at-a-time, sync/multi, fast/exact, fast/multi. On a
CPU only the ratios mean anything; absolute times and peak memory (CUDA) are printed when a GPU is used (ComfyUI
picks it unless --cpu).
Uses the fixture checkpoint by default (random weights, real architecture); --checkpoint picks one from
ComfyUI's models/checkpoints when COMFYUI_DIR points at a ComfyUI with real models.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from comfy_inprocess import load_pack  # noqa: E402


def setup_comfy(cpu: bool):
    comfy_dir = Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache" / "ComfyUI"))
    fixtures = Path(os.environ.get("SDL3D_FIXTURES", REPO_ROOT / ".cache" / "fixtures")) / "models"
    pack = load_pack(comfy_dir, cpu, [fixtures])
    sys.path.insert(1, str(REPO_ROOT / "tests"))
    return pack


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="sdl3d_tiny_sd15.safetensors")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--sync-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lpips", default="alex", choices=["alex", "vgg"])
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is present")
    ns = parser.parse_args(argv)

    import torch

    setup_comfy(ns.cpu or not torch.cuda.is_available())
    import comfy.model_management as mm
    import comfy.sample
    import comfy.sd
    import folder_paths
    from diffusers import DDIMScheduler
    from oracles.official_loop import official_sample

    sync_nodes = sys.modules["syncdiffusion_ldm3d.nodes.sync.ksampler_nodes"]
    device = mm.get_torch_device()
    path = folder_paths.get_full_path_or_raise("checkpoints", ns.checkpoint)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    tokens = clip.tokenize("a wide mountain landscape")
    positive = [[clip.encode_from_tokens(tokens), {}]]
    negative = [[clip.encode_from_tokens(clip.tokenize("")), {}]]
    lpips_choice = sync_nodes.load_lpips("bench", ns.lpips)
    lat_h, lat_w = ns.height // 8, ns.width // 8
    latent = {"samples": torch.zeros(1, 4, lat_h, lat_w)}
    ksampler = sync_nodes.SyncDiffusionKSampler

    def ours(weight, view_batch_size, fast=False):
        return ksampler.execute(
            model=model,
            positive=positive,
            negative=negative,
            latent_image=latent,
            vae=vae,
            seed=1,
            steps=ns.steps,
            cfg=7.5,
            sampler_name="euler",
            scheduler="ddim_uniform",
            denoise=1.0,
            window=ns.window,
            stride=ns.stride,
            sync_weight=weight,
            sync_decay=0.95,
            sync_freq=1,
            sync_steps=ns.sync_steps,
            anchor="middle",
            circular=False,
            view_batch_size=view_batch_size,
            lpips=lpips_choice,
            sync_fast=fast,
        ).result[0]["samples"]

    mm.load_models_gpu([model, vae.patcher])
    unet, ms = model.model.diffusion_model, model.model.model_sampling
    decoder, scale = vae.first_stage_model, model.model.latent_format.scale_factor
    cond = positive[0][0].to(device)
    uncond = negative[0][0].to(device)
    lpips_model = lpips_choice.model.to(device)

    def eps_fn(z, t):
        n = z.shape[0]
        out = unet(
            torch.cat([z, z]).to(model.model.get_dtype()),
            torch.full((2 * n,), float(t), device=device),
            context=torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]),
        ).float()
        e_u, e_c = out.chunk(2)
        return e_u + 7.5 * (e_c - e_u)

    def reference():
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
        scheduler.set_timesteps(ns.steps)
        sigma0 = ms.sigma(scheduler.timesteps[:1].float().to(ms.sigmas.device))[0].cpu()
        start = comfy.sample.prepare_noise(latent["samples"], 1) * sigma0 / (1 + sigma0**2) ** 0.5
        decode = lambda z: ((decoder.decode((z / scale).to(vae.vae_dtype)).float()[:, :3] + 1) / 2).clamp(0, 1)  # noqa: E731
        grid = pack_views(lat_h, lat_w, ns.window // 8, ns.stride // 8)
        return official_sample(
            eps_fn,
            decode,
            lambda a, b: lpips_model(a, b),
            scheduler,
            start.to(device),
            ns.steps,
            window=ns.window // 8,
            stride=ns.stride // 8,
            sync_weight=20.0,
            sync_decay_rate=0.95 ** (50 / ns.steps),
            sync_thres=ns.sync_steps,
            views=grid,
        )

    def pack_views(h, w, win, stride):
        core_views = sys.modules["syncdiffusion_ldm3d.sync_core.views"]
        return [
            (v.top, v.top + v.height, v.left, v.left + v.width) for v in core_views.build_view_grid(h, w, win, stride)
        ]

    cases = {
        "reference_sync": reference,
        "sync_one": lambda: ours(20.0, 1),
        "sync_auto": lambda: ours(20.0, 0),
        "sync_fast_auto": lambda: ours(20.0, 0, fast=True),
        "multi_one": lambda: ours(0.0, 1),
        "multi_auto": lambda: ours(0.0, 0),
    }
    times = {name: [] for name in cases}
    peaks = {name: 0 for name in cases}
    for fn in cases.values():  # warm-up
        with torch.inference_mode(False):
            fn()
    for _ in range(ns.repeats):
        for name, fn in cases.items():
            if torch.cuda.is_available() and device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with torch.inference_mode(name != "reference_sync"):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated())
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    views = len(pack_views(lat_h, lat_w, ns.window // 8, ns.stride // 8))
    print(
        f"device {device}; {ns.width}x{ns.height} px, window {ns.window}, stride {ns.stride} ({views} views), "
        f"{ns.steps} steps, sync on {ns.sync_steps}, LPIPS-{ns.lpips}, {ns.repeats} repeats, checkpoint {ns.checkpoint}"
    )
    for name in cases:
        memory = f", peak {peaks[name] / 2**30:.2f} GiB" if peaks[name] else ""
        print(f"  {name:22s} median {median[name]:8.3f} s{memory}")
    m = median
    ratios = [
        ("ours/reference (sync, one view per call)", m["sync_one"] / m["reference_sync"]),
        ("batched/one-at-a-time (sync)", m["sync_auto"] / m["sync_one"]),
        ("batched/one-at-a-time (multi)", m["multi_auto"] / m["multi_one"]),
        ("SyncDiffusion/MultiDiffusion (auto)", m["sync_auto"] / m["multi_auto"]),
        ("fast/exact (sync, auto)", m["sync_fast_auto"] / m["sync_auto"]),
        ("fast/MultiDiffusion (auto)", m["sync_fast_auto"] / m["multi_auto"]),
    ]
    for label, value in ratios:
        print(f"ratio {label:42s} {value:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
