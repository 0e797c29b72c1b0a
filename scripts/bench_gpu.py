"""GPU benchmark of the SyncDiffusion KSampler at real sizes, through the node in real ComfyUI (in-process).

    python scripts/bench_gpu.py --comfy /path/to/ComfyUI --out results/ [--arch sd2 sdxl] [--time-budget 420]
    python scripts/bench_gpu.py --tiny --cpu            # CPU rehearsal on small sizes (checks the script runs)

Models: real SD2-base / SDXL architectures with random weights (diffusers configs loaded through
comfy.sd.load_diffusion_model_state_dict, the SD VAE through comfy.sd.VAE), random TAESD/TAESDXL decoders in a
temporary models/vae_approx and a random VGG16 backbone for LPIPS-VGG in models/lpips. Conditioning is random
(same shapes as the text encoders'). --tiny uses the repository's test fixtures instead.

The work (issue "SyncDiffusion at real sizes"): SD2 at 2048x512, window 512, stride 128 (13 views), 50 steps,
euler + ddim_uniform, cfg 7.5, w 20, decay 0.99, sync on the first 10 steps, LPIPS-VGG; SDXL at 4096x1024, window
1024, stride 256 with a 24 GiB budget. Each variant: one warm-up run, then one timed run between
torch.cuda.synchronize() calls, peak = torch.cuda.max_memory_allocated() after reset_peak_memory_stats().
results.json is rewritten after every variant; the script stops starting variants when --time-budget runs out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(1, str(REPO_ROOT / "tests" / "fixtures"))

SD2_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    attention_head_dim=(5, 10, 20, 20),
    cross_attention_dim=1024,
    use_linear_projection=True,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
SD_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
ARCHS = {
    "sd2": dict(
        unet=SD2_UNET,
        context=1024,
        pooled=None,
        taesd="taesd",
        width=2048,
        height=512,
        window=512,
        stride=128,
        steps=50,
        sync_steps=10,
    ),
    "sdxl": dict(
        unet=SDXL_UNET,
        context=2048,
        pooled=1280,
        taesd="taesdxl",
        width=4096,
        height=1024,
        window=1024,
        stride=256,
        steps=20,
        sync_steps=10,
    ),
}
# name -> node overrides (w, view batch, budget, fast)
VARIANTS = {
    "sd2": {
        "sync_auto": dict(sync_weight=20.0),
        "multi_auto": dict(sync_weight=0.0),
        "sync_fast_auto": dict(sync_weight=20.0, sync_fast=True),
        "sync_budget_8gib": dict(memory_budget_gb=8.0),
        "sync_one": dict(view_batch_size=1),
        "multi_one": dict(sync_weight=0.0, view_batch_size=1),
    },
    "sdxl": {
        "sync_budget_24gib": dict(memory_budget_gb=24.0),
        "sync_fast_budget_24gib": dict(memory_budget_gb=24.0, sync_fast=True),
    },
}


def write_aux_models(models: Path, taesd_names) -> None:
    """Random TAESD-family decoders and a random VGG16/AlexNet LPIPS backbone in a ComfyUI models tree."""
    import comfy.taesd.taesd
    import safetensors.torch
    import torch
    from build import randomize
    from sync_fixtures import build_sync_fixtures

    build_sync_fixtures(models)
    (models / "vae_approx").mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(taesd_names):
        torch.manual_seed(seed)
        taesd = randomize(comfy.taesd.taesd.TAESD(latent_channels=4))
        safetensors.torch.save_file(
            {k: v.contiguous() for k, v in taesd.taesd_decoder.state_dict().items()},
            str(models / "vae_approx" / f"{name}_decoder.safetensors"),
        )


def build_models(arch: dict, device):
    """(MODEL patcher, VAE, positive, negative) with random weights and the real architecture."""
    import comfy.sd
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet_sd = UNet2DConditionModel(**arch["unet"]).state_dict()
    model = comfy.sd.load_diffusion_model_state_dict({k: v.cpu() for k, v in unet_sd.items()})
    del unet_sd
    with torch.device(device):
        vae_sd = AutoencoderKL(**SD_VAE).state_dict()
    vae = comfy.sd.VAE(sd={k: v.cpu() for k, v in vae_sd.items()})
    generator = torch.Generator().manual_seed(1)

    def conditioning():
        extra = {} if arch["pooled"] is None else {"pooled_output": torch.randn(1, arch["pooled"], generator=generator)}
        return [[torch.randn(1, 77, arch["context"], generator=generator), extra]]

    return model, vae, conditioning(), conditioning()


def fixture_models():
    import comfy.sd
    import folder_paths

    path = folder_paths.get_full_path_or_raise("checkpoints", "sdl3d_tiny_sd15.safetensors")
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    encode = lambda text: [[clip.encode_from_tokens(clip.tokenize(text)), {}]]  # noqa: E731
    return model, vae, encode("a wide mountain landscape"), encode("")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", type=Path, default=REPO_ROOT / ".cache" / "ComfyUI")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / ".cache" / "bench_gpu")
    parser.add_argument("--arch", nargs="+", default=["sd2", "sdxl"], choices=sorted(ARCHS))
    parser.add_argument("--variants", nargs="*", help="only these variant names")
    parser.add_argument("--tiny", action="store_true", help="CPU rehearsal: test fixtures, small sizes, 3 steps")
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--time-budget", type=float, default=420.0, help="seconds; no variant starts after it")
    ns = parser.parse_args(argv)
    started = time.perf_counter()
    ns.out.mkdir(parents=True, exist_ok=True)
    aux = Path(tempfile.mkdtemp(prefix="sdl3d_bench_models_"))

    from comfy_inprocess import load_pack

    dirs = [REPO_ROOT / ".cache" / "fixtures" / "models"] if ns.tiny else []
    import torch

    cpu = ns.cpu or not torch.cuda.is_available()
    load_pack(ns.comfy, cpu, dirs)
    write_aux_models(aux, [ARCHS[a]["taesd"] for a in ns.arch])
    import folder_paths

    for folder in ("vae_approx", "lpips"):
        folder_paths.add_model_folder_path(folder, str(aux / folder), is_default=True)
    import comfy.model_management as mm

    device = mm.get_torch_device()
    ksampler = sys.modules["syncdiffusion_ldm3d.nodes.sync.ksampler_nodes"].SyncDiffusionKSampler
    load_lpips = sys.modules["syncdiffusion_ldm3d.nodes.sync.ksampler_nodes"].load_lpips
    results = {"device": str(device), "torch": torch.__version__, "cuda": torch.cuda.is_available(), "runs": []}
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(device)
    lpips_vgg = load_lpips("bench", "vgg")

    for arch_name in ns.arch:
        arch = dict(ARCHS[arch_name])
        if ns.tiny:
            arch.update(width=384, height=64, window=64, stride=32, steps=3, sync_steps=2)
            model, vae, positive, negative = fixture_models()
        else:
            model, vae, positive, negative = build_models(arch, device)
        latent = {"samples": torch.zeros(1, 4, arch["height"] // 8, arch["width"] // 8)}
        for name, overrides in VARIANTS[arch_name].items():
            if ns.variants and name not in ns.variants:
                continue
            if time.perf_counter() - started > ns.time_budget:
                print(f"time budget spent; skipping {arch_name}/{name}", flush=True)
                continue
            params = dict(
                model=model,
                positive=positive,
                negative=negative,
                latent_image=latent,
                vae=vae,
                seed=1,
                steps=arch["steps"],
                cfg=7.5,
                sampler_name="euler",
                scheduler="ddim_uniform",
                denoise=1.0,
                window=arch["window"],
                stride=arch["stride"],
                sync_weight=20.0,
                sync_decay=0.99,
                sync_freq=1,
                sync_steps=arch["sync_steps"],
                anchor="middle",
                circular=False,
                view_batch_size=0,
                lpips=lpips_vgg,
            )
            params.update(overrides)
            record = {
                "arch": arch_name,
                "variant": name,
                **{k: v for k, v in overrides.items()},
                "size": f"{arch['width']}x{arch['height']}",
                "steps": arch["steps"],
            }
            try:
                with torch.inference_mode():
                    ksampler.execute(**params)  # warm-up
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    start = time.perf_counter()
                    out = ksampler.execute(**params).result[0]["samples"]
                    if device.type == "cuda":
                        torch.cuda.synchronize()
                record["seconds"] = round(time.perf_counter() - start, 3)
                if device.type == "cuda":
                    record["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                record["finite"] = bool(torch.isfinite(out).all())
            except Exception as err:  # a failed variant is a result too (e.g. out of memory)
                record["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            results["runs"].append(record)
            print(json.dumps(record), flush=True)
            (ns.out / "results.json").write_text(json.dumps(results, indent=1))
        del model, vae
        mm.unload_all_models()
        mm.soft_empty_cache()
    print_table(results)
    return 0


def print_table(results: dict) -> None:
    runs = {(r["arch"], r["variant"]): r for r in results["runs"]}
    print(f"\n{results.get('gpu', results['device'])}, torch {results['torch']}")
    print("| arch | variant | seconds | peak GiB |\n|---|---|---|---|")
    for (arch, variant), r in runs.items():
        print(f"| {arch} | {variant} | {r.get('seconds', r.get('error', '-'))} | {r.get('peak_gib', '-')} |")

    def ratio(a: str, b: str) -> float | None:
        ta, tb = runs.get(("sd2", a), {}).get("seconds"), runs.get(("sd2", b), {}).get("seconds")
        return ta / tb if ta is not None and tb is not None else None

    for label, a, b in (
        ("sync/multi (auto)", "sync_auto", "multi_auto"),
        ("fast/multi (auto)", "sync_fast_auto", "multi_auto"),
        ("batched/one (sync)", "sync_auto", "sync_one"),
    ):
        value = ratio(a, b)
        if value is not None:
            print(f"ratio {label}: {value:.3f}")


if __name__ == "__main__":
    sys.exit(main())
