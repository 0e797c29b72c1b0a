"""Benchmark ODS stereo synthesis against a plain gather pass of the same size (the lower bound).

    PYTHONPATH=. python scripts/bench_stereo.py [--device cpu|cuda] [--width 4096] [--repeats 3] [--threads N]

Per eye the image is W x W/2 (default 4096 x 2048, the size Meta recommends). Timed, each the median of
--repeats runs after one warm-up:
- ``pair_forward``: depth -> distance + both eyes with the z-buffered forward warp and background fill
  (the node's default path, float32 geometry);
- ``pair_forward_ss2``: the same with 2x supersampling (only with --supersample);
- ``pair_backward``: both eyes with the fast backward-warp preview;
- ``gather``: one ``image.reshape(N, 3)[index]`` pass with a precomputed shifted index, i.e. what a warp that
  already knew its source pixels would cost for ONE eye.
Ratios are printed against ``2 x gather`` (a pair). The last line is JSON for the record.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # plain script (not a ComfyUI process): the pack's cores are importable from the root
    sys.path.insert(0, str(REPO))

from ldm3d_core.distance import DepthMapping, depth_to_distance  # noqa: E402
from ldm3d_core.ods import ODSGeometry  # noqa: E402
from ldm3d_core.ods_warp import render_pair  # noqa: E402


def synthetic(width: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Textured equirect with smooth depth and a few near blocks (one across the seam)."""
    height = width // 2
    g = torch.Generator().manual_seed(0)
    img = torch.rand(height, width, 3, generator=g)
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    a = (xx + 0.5) / width * 2 * math.pi
    d = 0.3 + 0.2 * torch.sin(3 * a) * torch.cos(yy / height * math.pi)
    for k in range(8):
        x0 = (k * width) // 8 - width // 32
        cols = torch.arange(x0, x0 + width // 16) % width
        d[height // 3 : 2 * height // 3, cols] = 0.6 + 0.04 * k
    return img.to(device), d.to(device)


def _timed(fn, device, repeats):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--supersample", action="store_true", help="also time supersample=2")
    parser.add_argument(
        "--check", action="store_true", help="on a non-CPU device, also compare a 512-wide pair with the CPU result"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    img, d = synthetic(args.width, device)
    geom = ODSGeometry()
    n = img.shape[0] * img.shape[1]
    index = (torch.arange(n, device=device) + 7) % n

    def pair(**kw):
        r = depth_to_distance(d, DepthMapping("inverse", 1.0, 20.0))
        left, right = render_pair(img, r, geom, **kw)
        return left.image, right.image

    results = {
        "pair_forward": _timed(lambda: pair(), device, args.repeats),
        "pair_backward": _timed(lambda: pair(warp="backward"), device, args.repeats),
        "gather": _timed(lambda: img.reshape(n, 3)[index], device, args.repeats),
    }
    if args.supersample:
        results["pair_forward_ss2"] = _timed(lambda: pair(supersample=2), device, args.repeats)
    holes = pair()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"ODS stereo pair, {args.width}x{args.width // 2} per eye, {name}, torch {torch.__version__}")
    lower = 2 * results["gather"]
    for key, value in results.items():
        ratio = value / lower if key != "gather" else 0.5
        print(f"  {key:18s} {value * 1000:9.1f} ms   {ratio:7.1f}x  (vs 2 x gather)")
    record = {
        "device": name,
        "width": args.width,
        "seconds": results,
        "ratio_pair_forward_vs_2gather": results["pair_forward"] / lower,
        "finite": bool(torch.isfinite(holes[0]).all()),
    }
    if args.check and device.type != "cpu":
        record["mismatch_vs_cpu"] = compare_with_cpu(device)
        print(f"  pixels differing from the CPU result at 512x256 (left, right): {record['mismatch_vs_cpu']}")
    print(json.dumps(record))


def compare_with_cpu(device) -> list[float]:
    """Fraction of output pixels (colour or hole) that differ between ``device`` and the CPU (float32 trig can
    round a shift differently in the last ulp; expected ~0)."""
    img, d = synthetic(512, torch.device("cpu"))
    r = depth_to_distance(d, DepthMapping("inverse", 1.0, 20.0))
    cpu = render_pair(img, r, ODSGeometry())
    dev = render_pair(img.to(device), r.to(device), ODSGeometry())
    out = []
    for a, b in zip(cpu, dev):
        diff = (a.image != b.image.cpu()).any(-1) | (a.hole != b.hole.cpu())
        out.append(float(diff.float().mean()))
    return out


if __name__ == "__main__":
    main()
