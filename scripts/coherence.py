"""Intra-LPIPS and Intra-Style-L (the SyncDiffusion paper's coherence metrics) for panorama image files.

Each PATH is an image file (PNG/JPG/JPEG/WEBP) or a folder of them; every PATH is one group with its own mean,
so two folders (e.g. the same seeds at w=0 and at w=20) compare side by side. Lower = more coherent. The protocol
is the official evaluation code's (docs/coherence_metrics.md): crop_size x crop_size non-overlapping crops,
LPIPS-VGG mean over crop pairs; style loss (VGG19 conv1..conv5 Gram matrices) summed over crop pairs after resizing
the shorter side to the crop size; both averaged over the images of a group.

Works without ComfyUI (only sync_core). Backbones are never downloaded: torchvision's ``vgg16-397923af.pth`` (or
``alexnet-owt-7be5be79.pth`` with --net alex) and ``vgg19-dcbb9e9d.pth`` are searched in every --lpips-dir (e.g.
ComfyUI/models/lpips), then in the torch hub cache.

Usage:
    python scripts/coherence.py out/w0 out/w20 --lpips-dir ComfyUI/models/lpips [--crop 512] [--json scores.json]
Options: --net vgg|alex, --device auto|cpu|cuda, --crop-batch N (crops per backbone call; memory vs speed).
Images that hold fewer than 2 crops are skipped with a message; the exit status is 1 when nothing was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain script (not a ComfyUI process): the pack's cores are importable from the root
    sys.path.insert(0, str(REPO))

from sync_core import coherence  # noqa: E402
from sync_core.perceptual import LPIPSWeightsMissing, build_lpips  # noqa: E402

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp"}


def collect(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{path} is neither an image file nor a folder")


def load_image(path: Path) -> torch.Tensor:
    """``[1, 3, H, W]`` float in [0, 1] (8-bit RGB; alpha dropped)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0


def measure(path: Path, lpips_model, vgg, crop: int, crop_batch: int) -> dict:
    image = load_image(path)
    lp = coherence.intra_lpips(lpips_model, image, crop=crop, crop_batch=crop_batch)
    st = coherence.intra_style_loss(vgg, image, crop=crop, crop_batch=crop_batch)
    return {
        "file": str(path),
        "width": int(image.shape[-1]),
        "height": int(image.shape[-2]),
        "intra_lpips": lp.value,
        "intra_style": st.value,
        "lpips_crops": lp.crops,
        "lpips_pairs": lp.pairs,
        "style_crops": st.crops,
        "style_pairs": st.pairs,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path, help="image files or folders; each one is a group")
    parser.add_argument("--crop", type=int, default=512, help="crop size in pixels (paper: 512)")
    parser.add_argument(
        "--lpips-dir",
        action="append",
        default=[],
        type=Path,
        help="folder with vgg16-397923af.pth / vgg19-dcbb9e9d.pth (repeatable)",
    )
    parser.add_argument("--net", choices=["vgg", "alex"], default="vgg", help="LPIPS network (paper: vgg)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    parser.add_argument("--crop-batch", type=int, default=4, help="crops per backbone call")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    ns = parser.parse_args(argv)
    device = torch.device(
        "cuda" if ns.device == "auto" and torch.cuda.is_available() else "cpu" if ns.device == "auto" else ns.device
    )
    search = [str(d) for d in ns.lpips_dir]
    try:
        groups = [(p, collect(p)) for p in ns.paths]
        lpips_model = build_lpips(ns.net, search_dirs=search).to(device)
        vgg = coherence.build_style_vgg(search_dirs=search).to(device)
    except (FileNotFoundError, LPIPSWeightsMissing, coherence.StyleWeightsMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    results = []
    header = (
        f"{'group':<24} {'file':<32} {'size':>11} {'crops':>5} {'pairs':>5} {'Intra-LPIPS':>12} {'Intra-Style-L':>14}"
    )
    print(f"crop {ns.crop}x{ns.crop}, LPIPS-{ns.net}, device {device}; lower = more coherent")
    print(header)
    print("-" * len(header))
    for group, files in groups:
        rows = []
        for path in files:
            try:
                row = measure(path, lpips_model, vgg, ns.crop, ns.crop_batch)
            except ValueError as err:
                print(f"skipped {path}: {err}", file=sys.stderr)
                continue
            rows.append(row)
            print(
                f"{group.name[:24]:<24} {path.name[:32]:<32} {row['width']:>5}x{row['height']:<5} "
                f"{row['lpips_crops']:>5} {row['lpips_pairs']:>5} {row['intra_lpips']:>12.4f} "
                f"{row['intra_style']:>14.6g}"
            )
        summary = {"path": str(group), "images": rows, "count": len(rows)}
        if rows:
            summary["intra_lpips"] = sum(r["intra_lpips"] for r in rows) / len(rows)
            summary["intra_style"] = sum(r["intra_style"] for r in rows) / len(rows)
        results.append(summary)
    print("-" * len(header))
    for summary in results:
        if summary["count"]:
            print(
                f"{summary['path'][-24:]:<24} {'mean of ' + str(summary['count']) + ' image(s)':<32} {'':>11} "
                f"{'':>5} {'':>5} {summary['intra_lpips']:>12.4f} {summary['intra_style']:>14.6g}"
            )
        else:
            print(f"{summary['path'][-24:]:<24} no image measured")
    if ns.json:
        ns.json.write_text(json.dumps({"crop": ns.crop, "net": ns.net, "groups": results}, indent=1))
    return 0 if any(s["count"] for s in results) else 1


if __name__ == "__main__":
    sys.exit(main())
