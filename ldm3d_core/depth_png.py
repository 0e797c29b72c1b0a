"""16-bit greyscale depth PNG read and write (numpy + Pillow, no ComfyUI).

Convention:
    code  : np.uint16 [H,W], 0 = far, 65535 = near (LDM3D's white = near, docs/ldm3d_stereo.md).
    depth : float32 [H,W] in [0,1] = code / 65535 (16-bit files) or value / 255 (8-bit files).
Written with Image.fromarray(uint16 array) and no `mode=` argument (deprecated, removed in Pillow 13).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, PngImagePlugin

from .rgbd import DEPTH_MAX


class DepthPNGError(ValueError):
    """The file is not a single-channel 8- or 16-bit greyscale PNG."""


@dataclass(frozen=True)
class DepthPNG:
    depth: np.ndarray  # float32 [H,W] in [0,1]
    bits: int  # 16 or 8
    mode: str  # Pillow mode the file opened with


def save_depth_png(
    path: str | os.PathLike, code: np.ndarray, pnginfo: PngImagePlugin.PngInfo | None = None, compress_level: int = 4
) -> None:
    """Write a uint16 [H,W] code array as a true 16-bit greyscale PNG."""
    code = np.asarray(code)
    if code.ndim != 2:
        raise ValueError(f"depth code must be [H,W], got shape {code.shape}")
    if code.dtype != np.uint16:
        if not np.issubdtype(code.dtype, np.integer) or code.min() < 0 or code.max() > DEPTH_MAX:
            raise ValueError(f"depth code must be integers in [0, {DEPTH_MAX}], got dtype {code.dtype}")
        code = code.astype(np.uint16)
    image = Image.fromarray(np.ascontiguousarray(code))
    image.save(path, format="PNG", pnginfo=pnginfo, compress_level=compress_level)


def load_depth_png(path: str | os.PathLike) -> DepthPNG:
    """Read a greyscale depth PNG: 16-bit (I;16 / I) gives bits=16, 8-bit (L) gives bits=8.

    Raises DepthPNGError for colour, palette, alpha or bilevel images.
    """
    with Image.open(path) as image:
        mode = image.mode
        if image.format != "PNG":
            raise DepthPNGError(f"not a PNG file (format {image.format}, mode {mode})")
        if mode in ("I;16", "I;16B", "I;16L", "I"):
            array = np.array(image).astype(np.int64)
            if array.ndim != 2 or array.min() < 0 or array.max() > DEPTH_MAX:
                raise DepthPNGError(f"mode {mode} values outside the 16-bit range [0, {DEPTH_MAX}]")
            return DepthPNG((array.astype(np.float64) / DEPTH_MAX).astype(np.float32), 16, mode)
        if mode == "L":
            array = np.array(image).astype(np.float32)
            return DepthPNG(array / 255.0, 8, mode)
        raise DepthPNGError(f"mode {mode} is not single-channel greyscale (16-bit 'I;16' or 8-bit 'L')")
