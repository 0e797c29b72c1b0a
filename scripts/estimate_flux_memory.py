"""Estimate the peak device memory of SyncDiffusion on Flux.1 (an estimate from the architecture, not a measurement).

    python scripts/estimate_flux_memory.py [--comfyui /path/to/ComfyUI] [--window 1024] [--budget-gib 24]

Method (docs/syncdiffusion.md, "Memory at 1024x4096 for Flux"):
- weights: parameters of ComfyUI's own Flux class with the Flux.1-dev configuration, built on the meta device (no
  memory, no weights), times the bytes per weight (bf16 2, fp8 1);
- gradient pass, per view, with the pack's gradient checkpointing: every checkpointed block keeps its inputs
  (57 blocks x tokens x hidden x 2 bytes), one block at a time is recomputed and differentiated
  (ACTIVATIONS_PER_TOKEN hidden-wide tensors, doubled for their gradients), plus the loss decoder and LPIPS at the
  window's pixel size (block inputs of the checkpointed KL decoder / TAESD decoder and VGG's first two stages,
  doubled for the recomputed block);
- denoising pass, per view: ComfyUI's own `memory_required` formula for Flux (memory_usage_factor 3.1);
- weight clones: ComfyUI's weights are inference tensors and the pack's weight bridge clones a weight where it
  meets a tensor that requires grad, so the block being differentiated and the un-checkpointed embedders hold a
  second copy of their weights (bf16 clones, also when the weights are stored as fp8);
- fixed: the panorama latent and ComfyUI's minimum inference reserve (~1 GiB); the text encoders are offloaded by
  ComfyUI after encoding.
The panorama's width does not change the peak: views go through the gradient pass one batch at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

GIB = 1024**3
FLUX_DEV = dict(
    image_model="flux",
    in_channels=16,
    out_channels=16,
    vec_in_dim=768,
    context_in_dim=4096,
    hidden_size=3072,
    mlp_ratio=4.0,
    num_heads=24,
    depth=19,
    depth_single_blocks=38,
    axes_dim=[16, 56, 56],
    theta=10000,
    patch_size=2,
    qkv_bias=True,
    guidance_embed=True,
)
TEXT_TOKENS = 512  # T5 tokens Flux-dev is run with in ComfyUI (padded)
# hidden-wide activations per token inside one block (q, k, v, attention out, projections, modulated inputs and the
# 4x-wide MLP in and out): a generous count for the double-stream block, the larger of the two kinds
ACTIVATIONS_PER_TOKEN = 16
FLUX_MEMORY_USAGE_FACTOR = 3.1  # comfy/supported_models.py Flux
RESERVE = 1.0 * GIB  # ComfyUI's minimum inference memory and the CUDA context, roughly


def flux_parameters(comfyui: Path) -> int:
    sys.path.insert(0, str(comfyui))
    from comfy.cli_args import args

    args.cpu = True
    import comfy.ops
    import torch
    from comfy.ldm.flux.model import Flux

    with torch.device("meta"):
        model = Flux(**FLUX_DEV, operations=comfy.ops.disable_weight_init)
    return sum(p.numel() for p in model.parameters())


def decoder_bytes(pixels_h: int, pixels_w: int, fast: bool, act_bytes: int = 2) -> float:
    """Checkpointed loss decoder + LPIPS for one view. KL decoder (Flux ae): 3 ResnetBlocks per level at channels
    512/512/256/128 for scales 1/8..1 (block inputs kept), plus one full-resolution block recomputed (x6 tensors);
    fast path: TAESD (64 channels at every scale, 3 blocks per scale) and LPIPS at 256 px. LPIPS-VGG, fp32, its
    first two stages (64 and 128 channels) at full and half resolution, doubled for gradients."""
    px = pixels_h * pixels_w
    if fast:
        decoder = sum(3 * 64 * px / 4**k for k in range(4)) * act_bytes + 6 * 64 * px * act_bytes
        lpips_px = 256 * 256 * max(pixels_w, pixels_h) / min(pixels_w, pixels_h)
    else:
        channels = {3: 512, 2: 512, 1: 256, 0: 128}
        decoder = sum(3 * c * px / 4**k for k, c in channels.items()) * act_bytes + 6 * 128 * px * act_bytes
        lpips_px = px
    lpips = 2 * (2 * 64 * lpips_px + 2 * 128 * lpips_px / 4) * 4
    return decoder + lpips


def estimate(comfyui: Path, window: int, budget_gib: float) -> list[tuple[str, float, str]]:
    params = flux_parameters(comfyui)
    cfg = FLUX_DEV
    blocks = cfg["depth"] + cfg["depth_single_blocks"]
    tokens = (window // 16) ** 2 + TEXT_TOKENS
    hidden = cfg["hidden_size"]
    kept = blocks * tokens * hidden * 2
    one_block = 2 * ACTIVATIONS_PER_TOKEN * tokens * hidden * 2
    # ComfyUI loads weights as inference tensors; nodes/sync/gradient_bridge.py clones a weight where it meets a
    # tensor that requires grad, so the recomputed block's weights exist twice while it is differentiated (36 h^2
    # parameters in a double-stream block), and the un-checkpointed embedders/final layer keep their clones for the
    # whole pass.
    block_weights = 36 * hidden * hidden * 2
    outside = (params - cfg["depth"] * 36 * hidden * hidden - cfg["depth_single_blocks"] * 15 * hidden * hidden) * 2
    latent = window // 8
    denoise = (latent * latent * 2 * 0.01 * FLUX_MEMORY_USAGE_FACTOR) * 1024 * 1024  # bf16, cfg 1 (one pass)
    rows = [
        ("Flux.1-dev parameters", params, "count"),
        ("weights bf16", params * 2, "bytes"),
        ("weights fp8", params * 1, "bytes"),
        (f"gradient pass per view: checkpointed block inputs ({blocks} blocks x {tokens} tokens)", kept, "bytes"),
        ("gradient pass per view: one block recomputed + its gradients", one_block, "bytes"),
        (
            "gradient pass: weight clones (one block + embedders and final layer), bf16",
            block_weights + outside,
            "bytes",
        ),
        ("gradient pass per view: exact loss decoder (KL) + LPIPS-VGG", decoder_bytes(window, window, False), "bytes"),
        ("gradient pass per view: fast path (taef1 + LPIPS at 256 px)", decoder_bytes(window, window, True), "bytes"),
        ("denoising pass per view (ComfyUI's Flux memory_required)", denoise, "bytes"),
        ("reserve (ComfyUI minimum inference memory, CUDA context)", RESERVE, "bytes"),
    ]
    per_view_exact = kept + one_block + decoder_bytes(window, window, False)
    per_view_fast = kept + one_block + decoder_bytes(window, window, True)
    clones = block_weights + outside
    for weights_name, weight_bytes in (("bf16", params * 2), ("fp8", params)):
        for path, per_view in (("exact", per_view_exact), ("fast", per_view_fast)):
            room = budget_gib * GIB - weight_bytes - RESERVE - clones
            fit = int(room // per_view) if room > 0 else 0
            rows.append(
                (
                    f"{weights_name} weights, {path} path: peak with 1 view / views per gradient batch in "
                    f"{budget_gib:g} GiB",
                    weight_bytes + RESERVE + clones + per_view,
                    f"{fit} views",
                )
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--comfyui",
        type=Path,
        default=Path(os.environ.get("COMFYUI_DIR", Path(__file__).resolve().parents[1] / ".cache" / "ComfyUI")),
    )
    parser.add_argument("--window", type=int, default=1024, help="view size in pixels (square)")
    parser.add_argument("--budget-gib", type=float, default=24.0)
    ns = parser.parse_args(argv)
    for name, value, unit in estimate(ns.comfyui.resolve(), ns.window, ns.budget_gib):
        if unit == "count":
            print(f"{name}: {value / 1e9:.2f} B")
        elif unit == "bytes":
            print(f"{name}: {value / GIB:.2f} GiB")
        else:
            print(f"{name}: {value / GIB:.2f} GiB ({unit})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
