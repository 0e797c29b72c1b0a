"""Full-sphere vs wrap-only panoramas, same prompt and seed, measured where random weights can tell (docs/sphere360.md):
the 0/360 seam ratio, pole anisotropy (tangential / radial gradient energy in the views straight up and down: about
1 when the pole was generated as image content, above 1 when equirect rows are squeezed into circles) and the view
consistency of the sphere sampler (mean |view - view rendered from the fused canvas|, with and without fusion) and
the views' mean LPIPS to the anchor view (what SyncDiffusion's anchor step lowers), with and without that step.

    python scripts/sphere_quality.py [--comfy DIR] [--fixtures DIR] [--width 256] [--steps 6] [--json out.json]

Runs real ComfyUI in-process on the CPU with the random-weight SD1.5 fixture (tests/fixtures/build.py). The
pictures are noise; what the numbers show is geometry: where content is generated (in views on the sphere, or as
flat rows of a 2:1 image) and whether the views agree. Real weights would add image quality (pole content that
makes sense, FID/CLIP scores), which this cannot measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from comfy_inprocess import load_pack  # noqa: E402

CKPT = "sdl3d_tiny_sd15.safetensors"
PROMPT = "360 panorama of a forest clearing, sky above, moss below"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", type=Path, default=Path(os.environ.get("COMFYUI_DIR", REPO / ".cache/ComfyUI")))
    parser.add_argument(
        "--fixtures", type=Path, default=Path(os.environ.get("SDL3D_FIXTURES", REPO / ".cache/fixtures"))
    )
    parser.add_argument("--width", type=int, default=256, help="equirect width in pixels (multiple of 16)")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--json", type=Path)
    ns = parser.parse_args(argv)

    pack = load_pack(ns.comfy, cpu=True, model_dirs=[ns.fixtures / "models"])
    import importlib

    import nodes
    import torch

    package = pack.__name__
    sphere_nodes = importlib.import_module(f"{package}.nodes.sphere.sphere_nodes")
    sync_nodes = importlib.import_module(f"{package}.nodes.sync.ksampler_nodes")
    sync_inputs = importlib.import_module(f"{package}.nodes.sync.inputs")
    metrics = importlib.import_module(f"{package}.ldm3d_core.sphere_metrics")
    canvas_module = importlib.import_module(f"{package}.ldm3d_core.sphere_canvas")
    views_module = importlib.import_module(f"{package}.ldm3d_core.sphere_views")

    def run(node_cls, **inputs):
        with torch.inference_mode():
            if hasattr(node_cls, "PREPARE_CLASS_CLONE"):
                node_cls.VALIDATE_CLASS()
                return node_cls.PREPARE_CLASS_CLONE({}).execute(**inputs).result
            return getattr(node_cls(), node_cls.FUNCTION)(**inputs)

    model, clip, vae = run(nodes.CheckpointLoaderSimple, ckpt_name=CKPT)
    (positive,) = run(nodes.CLIPTextEncode, clip=clip, text=PROMPT)
    (negative,) = run(nodes.CLIPTextEncode, clip=clip, text="")
    width, height, common = ns.width, ns.width // 2, dict(seed=ns.seed, steps=ns.steps, cfg=5.0, scheduler="normal")

    (latent,) = run(nodes.EmptyLatentImage, width=width, height=height, batch_size=1)
    (wrapped,) = run(
        sync_nodes.SyncDiffusionKSampler, model=model, positive=positive, negative=negative, latent_image=latent,
        vae=vae, sampler_name="euler", denoise=1.0, window=height, stride=height // 2, sync_weight=0.0,
        sync_decay=0.95, sync_freq=1, sync_steps=0, anchor="middle", circular=True, view_batch_size=0, **common,
    )  # fmt: skip
    vae_nodes = importlib.import_module(f"{package}.nodes.vae.tiled_nodes")
    (wrap_image,) = run(vae_nodes.VAEDecode360, samples=wrapped, vae=vae, circular=True, tile_size=0, overlap=64)

    view_px = max(64, width // 4 // 8 * 8)  # cube layout: 4 faces around the horizon
    results = {"wrap-only (SyncDiffusion KSampler + VAE Decode 360, circular)": {"image": wrap_image, "views": None}}
    lpips = sync_inputs.load_lpips("sphere_quality")  # LPIPS-VGG, as the sampler's default
    sphere_runs = (
        ("sphere, fusion until 0.8", 0.8, 0.0),
        ("sphere, fusion until 0.8 + LPIPS anchor step (w 20)", 0.8, 20.0),
        ("sphere, no fusion (independent views)", 0.0, 0.0),
    )
    for label, until, anchor_weight in sphere_runs:
        image, views, _ = run(
            sphere_nodes.SphereKSampler, model=model, positive=positive, negative=negative, vae=vae,
            sampler_name="euler", view_size=view_px, fov=90.0, layout="cube", overlap=0.1, width=width,
            sync_until=until, lpips=lpips, anchor_weight=anchor_weight, anchor_steps=ns.steps, **common,
        )  # fmt: skip
        results[label] = {"image": image, "views": views["samples"]}

    cameras = views_module.cube_layout((view_px, view_px))
    canvas = canvas_module.SphereCanvas(cameras, height, width)
    table = []
    for label, item in results.items():
        equirect = item["image"].movedim(-1, 1).float()
        row = {
            "run": label,
            "seam_ratio": metrics.seam_ratio(equirect),
            "pole_anisotropy_up": metrics.pole_anisotropy(equirect, "up", size=64),
            "pole_anisotropy_down": metrics.pole_anisotropy(equirect, "down", size=64),
            "view_consistency": None,
            "lpips_to_anchor": None,
        }
        if item["views"] is not None:
            with torch.inference_mode():
                decoded = vae.decode(item["views"]).movedim(-1, 1)[:, None].float()
                images = decoded[:, 0].clamp(0, 1) * 2 - 1  # the anchor is view 0, the sampler's default
                distance = lpips.model(images[1:], images[:1].expand_as(images[1:]))
            row["view_consistency"] = metrics.view_consistency(decoded, canvas)
            row["lpips_to_anchor"] = float(distance.mean())
        table.append(row)

    print(f"equirect {width}x{height}, {ns.steps} steps, seed {ns.seed}, sphere views {len(cameras)} x {view_px} px")
    print("| run | seam ratio 0/360 | pole anisotropy up | down | view consistency | LPIPS to anchor view |")
    print("|---|---|---|---|---|---|")
    for row in table:
        consistency = "-" if row["view_consistency"] is None else f"{row['view_consistency']:.4f}"
        to_anchor = "-" if row["lpips_to_anchor"] is None else f"{row['lpips_to_anchor']:.3g}"
        print(
            f"| {row['run']} | {row['seam_ratio']:.2f} | {row['pole_anisotropy_up']:.2f} | "
            f"{row['pole_anisotropy_down']:.2f} | {consistency} | {to_anchor} |"
        )
    if ns.json:
        ns.json.write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
