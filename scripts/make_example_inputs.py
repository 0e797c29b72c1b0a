"""Generate the small synthetic equirect inputs of the stereo-360 example workflows (deterministic).

    python scripts/make_example_inputs.py [--out workflows/inputs] [--width 512]

Writes ``stereo360_rgb.png`` (8-bit RGB, W x W/2) and ``stereo360_depth16.png`` (16-bit greyscale, white = near,
the LDM3D / MiDaS convention): a room-like scene of a far sky and ground, a ring of pillars at different
distances (one straddling the 0/360 seam) and a near box in front. Depth is D = near_ref / r (inverse depth
with near 1 m and far infinity), so the Stereo 360 node with depth_mode=inverse, near_m=1, far_m=0 recovers r.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image


def scene(width: int = 512):
    height = width // 2
    x = (np.arange(width) + 0.5) / width
    y = (np.arange(height) + 0.5) / height
    alpha = (x - 0.5) * 2 * math.pi
    beta = (0.5 - y) * math.pi
    aa, bb = np.meshgrid(alpha, beta)
    # background: sky (25 m) above the horizon, ground plane 1.6 m below the eyes below it
    r = np.where(bb > 0, 25.0, np.minimum(1.6 / np.maximum(np.sin(-bb), 1e-3), 25.0))
    rgb = np.empty((height, width, 3))
    sky = np.clip(bb / (math.pi / 2), 0, 1)[..., None]
    rgb[:] = (1 - sky) * np.array([0.85, 0.9, 1.0]) + sky * np.array([0.25, 0.45, 0.85])
    ground = bb <= 0
    checker = ((np.floor(aa * 8 / math.pi) + np.floor(np.log(r + 1e-6) * 4)) % 2)[..., None]
    rgb[ground] = (0.35 + 0.15 * checker * np.array([1.0, 0.8, 0.5]))[ground]
    # pillars: (azimuth deg, half-width deg, distance m, colour); the first straddles the seam
    pillars = [
        (180.0, 8, 3.0, (0.8, 0.2, 0.2)),
        (-90.0, 6, 2.0, (0.2, 0.7, 0.3)),
        (0.0, 10, 4.0, (0.9, 0.8, 0.2)),
        (90.0, 5, 1.5, (0.3, 0.3, 0.9)),
        (45.0, 4, 6.0, (0.8, 0.4, 0.8)),
    ]
    for az, half, dist, col in pillars:
        d_az = np.angle(np.exp(1j * (aa - math.radians(az))))
        top = math.atan2(1.5, dist)
        mask = (np.abs(d_az) < math.radians(half)) & (bb < top) & (r > dist)
        stripes = 0.85 + 0.15 * (np.floor(bb * 40) % 2)
        r[mask] = dist / np.cos(d_az[mask])
        rgb[mask] = np.array(col) * stripes[mask][:, None]
    box = (np.abs(aa - math.radians(-20)) < math.radians(12)) & (bb < -0.05) & (bb > -0.6)
    r[box] = 1.0 / np.cos(aa[box] - math.radians(-20))
    rgb[box] = np.array([0.95, 0.55, 0.1]) * (0.8 + 0.2 * (np.floor(aa[box] * 30) % 2))[:, None]
    depth = np.clip(1.0 / r, 0.0, 1.0)  # inverse depth, near = 1 m, far = infinity
    return np.clip(rgb, 0, 1), depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "workflows" / "inputs"))
    parser.add_argument("--width", type=int, default=512)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rgb, depth = scene(args.width)
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(out / "stereo360_rgb.png", optimize=True)
    Image.fromarray(np.round(depth * 65535).astype(np.uint16)).save(out / "stereo360_depth16.png", optimize=True)
    for name in ("stereo360_rgb.png", "stereo360_depth16.png"):
        print(out / name, (out / name).stat().st_size, "bytes")


if __name__ == "__main__":
    main()
