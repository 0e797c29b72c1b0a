"""Panorama quality measurements of issue 22, side by side in one run (the tiny fixture checkpoint by default).

    python scripts/bench_quality.py spot [--width 512 --height 128 --window 64 --steps 20 --seeds 4]
    python scripts/bench_quality.py vae [--latent 64x256 --tile 32 --overlap 8] [--tiled-diffusion DIR]
    python scripts/bench_quality.py grid [--steps 50 --seeds 8]   # no ComfyUI, seconds

spot: SpotDiffusion seams on a plain (non-360) image. For each stride (window / 2 and window, pixels) and seed, the
SyncDiffusion KSampler (sync off) with fusion spot and uniform, and the stock KSampler on the whole canvas; the seam
detector is the mean jump of (tiled - full canvas) latent between neighbouring columns at the columns where a fixed
grid keeps a border (x = window and x = W - window, latent units) over the mean jump at all other columns (1 = no
seam there). Also: latent pixels evaluated per step by spot over those of uniform (the same window and stride), and
the wall time ratio spot / uniform.

grid: the same seam detector without a model (seconds, no ComfyUI): every view is a tile that disagrees with the
others (a random value per view, row and step, added to the running canvas); latent 64x256, window 64, strides 32
and 64. Rows: the fixed grid (uniform), the clamped spot grid (before issue 22: the same views fused whole) and the
moving-border spot fusion; plus latent pixels evaluated per step over those of the fixed grid.

vae: tiled VAE Decode / Encode on the GroupNorm + attention SD-architecture VAE of the tests (ComfyUI's own
AutoencoderKL, random weights: tests/model_fixtures.py groupnorm_vae) against the untiled stock decode / encode:
mean |error| with per-tile statistics (before issue 22) and with whole-image statistics (the nodes now), and the
wall time ratio. Tile and overlap in latent pixels; the latent is random normal plus a horizontal ramp.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from comfy_inprocess import load_pack, pack_node_classes  # noqa: E402


def setup_comfy(cpu: bool):
    comfy_dir = Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache" / "ComfyUI"))
    fixtures = Path(os.environ.get("SDL3D_FIXTURES", REPO_ROOT / ".cache" / "fixtures")) / "models"
    pack = load_pack(comfy_dir, cpu, [fixtures])
    sys.path.insert(1, str(REPO_ROOT / "tests"))
    return pack


def seam_ratio(diff, columns):
    jumps = (diff[..., 1:] - diff[..., :-1]).abs().mean(dim=tuple(range(diff.dim() - 1)))  # [W - 1]
    at = [c - 1 for c in columns]
    others = [i for i in range(jumps.shape[0]) if i not in at]
    return float(jumps[at].mean() / jumps[others].mean())


def bench_spot(ns) -> None:
    import torch

    pack = setup_comfy(ns.cpu or not torch.cuda.is_available())
    ksampler = {cls.GET_SCHEMA().node_id: cls for cls in pack_node_classes(pack)}["SDL3D_SyncDiffusionKSampler"]
    from comfy_harness import run_node, stock_node

    fusion = sys.modules["syncdiffusion_ldm3d.sync_core.fusion"]
    views = sys.modules["syncdiffusion_ldm3d.sync_core.views"]
    model, clip, vae = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=ns.checkpoint)
    (pos,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="a wide mountain landscape")
    (neg,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="")
    lat_h, lat_w, win = ns.height // 8, ns.width // 8, ns.window // 8
    latent = {"samples": torch.zeros(1, 4, lat_h, lat_w)}
    common = dict(positive=pos, negative=neg, latent_image=latent, cfg=5.0, sampler_name="euler")
    common.update(scheduler="normal", denoise=1.0, steps=ns.steps)
    print(f"spot seams: {ns.width}x{ns.height} px, window {ns.window} px, {ns.steps} steps, seeds 0..{ns.seeds - 1}")
    print("| stride px | seam spot | seam uniform | pixels spot / uniform | time spot / uniform |")
    print("|---|---|---|---|---|")
    for stride_px in (ns.window // 2, ns.window):
        stride = stride_px // 8
        seams = {"spot": [], "uniform": []}
        times = {"spot": 0.0, "uniform": 0.0}
        for seed in range(ns.seeds):
            full = run_node(stock_node("KSampler"), model=model, seed=seed, **common)[0]["samples"]
            for name in ("spot", "uniform"):
                start = time.perf_counter()
                tiled = run_node(
                    ksampler,
                    model=model,
                    vae=vae,
                    seed=seed,
                    window=ns.window,
                    stride=stride_px,
                    sync_weight=0.0,
                    sync_decay=0.95,
                    sync_freq=1,
                    sync_steps=0,
                    anchor="middle",
                    circular=False,
                    view_batch_size=1,
                    fusion=name,
                    **common,
                )[0]["samples"]
                times[name] += time.perf_counter() - start
                seams[name].append(seam_ratio(tiled - full, [win, lat_w - win]))
        shifts = fusion.spot_shifts(0, ns.steps, (stride, stride))
        base = len(views.build_view_grid(lat_h, lat_w, win, stride))
        spot_views = sum(len(_spot_grid(fusion, lat_h, lat_w, win, stride, s)) for s in shifts) / ns.steps
        print(
            f"| {stride_px} | {sum(seams['spot']) / ns.seeds:.2f} | {sum(seams['uniform']) / ns.seeds:.2f} "
            f"| {spot_views / base:.2f} | {times['spot'] / times['uniform']:.2f} |"
        )


def _spot_grid(fusion, lat_h, lat_w, win, stride, shift):
    if hasattr(fusion, "spot_grid"):
        return fusion.spot_grid(lat_h, lat_w, (win, win), (stride, stride), shift)[0]
    return fusion.shifted_view_grid(lat_h, lat_w, (win, win), (stride, stride), shift)  # before issue 22


def bench_vae(ns) -> None:
    import torch

    setup_comfy(ns.cpu or not torch.cuda.is_available())
    from model_fixtures import groupnorm_vae

    tiling = sys.modules["syncdiffusion_ldm3d.ldm3d_core.tiling"]
    glue = sys.modules["syncdiffusion_ldm3d.nodes.vae.whole_image"]
    vae = groupnorm_vae()
    h, w = (int(v) for v in ns.latent.split("x"))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, h, w, generator=g) + torch.linspace(-1, 1, w)
    with torch.inference_mode():
        full = vae.decode(z).movedim(-1, 1)
        decode = lambda t: vae.decode(t).movedim(-1, 1)  # noqa: E731
        encode = lambda t: vae.encode(t.movedim(1, -1))  # noqa: E731
        rows = []
        pixels = full.clamp(0, 1)
        full_latent = vae.encode(pixels.movedim(1, -1))
        for name, whole in (("per tile", None), ("whole image", "yes")):
            start = time.perf_counter()
            norm = glue.whole_image_norm(vae, "decoder") if whole else None
            out = tiling.decode_tiled(z, decode, ns.tile, ns.overlap, 8, whole_image=norm)
            t_dec = time.perf_counter() - start
            norm = glue.whole_image_norm(vae, "encoder") if whole else None
            enc = tiling.encode_tiled(pixels, encode, ns.tile, ns.overlap, 8, whole_image=norm)
            rows.append((name, (out - full).abs().mean().item(), (enc - full_latent).abs().mean().item(), t_dec))
        if ns.tiled_diffusion:  # the same VAE, latent and tile size through ComfyUI-TiledDiffusion's Tiled VAE
            td = _load_tiled_diffusion_vae(ns.tiled_diffusion)
            for name, fast in (("TiledDiffusion, exact (fast off)", False), ("TiledDiffusion, fast estimate", True)):
                start = time.perf_counter()
                out = (
                    td.VAEDecodeTiled_TiledDiffusion()
                    .process(samples={"samples": z}, vae=vae, tile_size=ns.tile * 8, fast=fast)[0]
                    .movedim(-1, 1)
                )
                t_dec = time.perf_counter() - start
                enc = td.VAEEncodeTiled_TiledDiffusion().process(
                    pixels=pixels.movedim(1, -1), vae=vae, tile_size=ns.tile * 8, fast=fast
                )[0]["samples"]
                rows.append((name, (out - full).abs().mean().item(), (enc - full_latent).abs().mean().item(), t_dec))
    print(f"tiled VAE: latent {h}x{w}, tile {ns.tile}, overlap {ns.overlap} (latent px), GroupNorm+attention VAE")
    print("| statistics | decode mean abs error | encode mean abs error | decode time / per-tile |")
    print("|---|---|---|---|")
    for name, dec, enc, t in rows:
        print(f"| {name} | {dec:.4f} | {enc:.4f} | {t / rows[0][3]:.2f} |")


def _load_tiled_diffusion_vae(folder: str):
    """tiled_vae.py of a ComfyUI-TiledDiffusion checkout, imported as it is (for the side-by-side rows only)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("tiled_diffusion_tiled_vae", Path(folder) / "tiled_vae.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_grid(ns) -> None:
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    from sync_core import fusion
    from sync_core.views import build_view_grid

    h, w, win = 64, 256, 64
    print(
        f"seam detector, simulated disagreeing tiles: latent {h}x{w}, window {win}, {ns.steps} steps, {ns.seeds} seeds"
    )
    print("| stride | fixed grid | spot, clamped (before) | spot, moving borders (after) | views per step / fixed |")
    print("|---|---|---|---|---|")
    for stride in (win // 2, win):
        ratios = {"fixed": [], "clamped": [], "moving": []}
        views_per_step = []
        for seed in range(ns.seeds):
            shifts = fusion.spot_shifts(seed, ns.steps, (stride, stride))
            grids = [fusion.spot_grid(h, w, (win, win), (stride, stride), s) for s in shifts]
            views_per_step += [len(v) for v, _ in grids]
            fixed = build_view_grid(h, w, win, stride)
            for name, at in (
                ("fixed", lambda i, fixed=fixed: (fixed, None)),
                ("clamped", lambda i, grids=grids: (grids[i][0], None)),
                ("moving", lambda i, grids=grids: grids[i]),
            ):
                g = torch.Generator().manual_seed(100 + seed)
                x = torch.zeros(h, w)
                for i in range(ns.steps):
                    views, weights = at(i)
                    tiles = torch.randn(len(views), h, 1, generator=g)[:, :win].expand(len(views), win, win)
                    x = x + fusion.weighted_average(tiles, views, weights, h, w)
                ratios[name].append(seam_ratio(x, [win, w - win]))
        base = len(build_view_grid(h, w, win, stride))
        mean = {k: sum(v) / len(v) for k, v in ratios.items()}
        cost = sum(views_per_step) / len(views_per_step) / base
        print(f"| {stride} | {mean['fixed']:.2f} | {mean['clamped']:.2f} | {mean['moving']:.2f} | {cost:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["spot", "vae", "grid"])
    parser.add_argument("--latent", default="64x256")
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--overlap", type=int, default=8)
    parser.add_argument("--checkpoint", default="sdl3d_tiny_sd15.safetensors")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when a GPU is present")
    parser.add_argument(
        "--tiled-diffusion",
        metavar="DIR",
        help="vae: also run the Tiled VAE of a ComfyUI-TiledDiffusion checkout in DIR on the same VAE and latent",
    )
    ns = parser.parse_args(argv)
    {"spot": bench_spot, "vae": bench_vae, "grid": bench_grid}[ns.what](ns)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
