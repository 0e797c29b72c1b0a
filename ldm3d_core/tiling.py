"""Tiled and horizontally circular (360 degree) decoding of latents, with feathered blending (pure torch).

Convention:
    latent : [B,C,h,w] (NCHW, latent pixels); decode_fn maps a latent tile [B,C,th,tw] to pixels
             [B,Co,th*scale,tw*scale] (NCHW). Output [B,Co,h*scale,w*scale] float32.
    tile / overlap are in latent pixels. Tiles are blended with weights that ramp linearly over the
    overlap (value (i + 0.5) / ramp at pixel i of a ramp) on interior edges only and are 1 elsewhere;
    the result is sum(w * tile) / sum(w), so a decode_fn without border effects is reproduced exactly.
    circular_x: the x axis is periodic (an equirectangular panorama, column w-1 touches column 0).
    Tiles then wrap around the seam, and an untiled decode is done on a latent padded with wrapped
    columns (pad latent pixels each side) that are cropped off afterwards.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

DecodeFn = Callable[[torch.Tensor], torch.Tensor]


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared pixels."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def circular_tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets (mod length) of evenly spread tiles covering a periodic axis with >= `overlap` overlap."""
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need 0 <= overlap < tile, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    count = math.ceil(length / (tile - overlap))
    return [(k * length) // count for k in range(count)]


def ramp_weights(size: int, ramp: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D blending weights: 1 inside, rising (i + 0.5) / ramp over `ramp` pixels on the chosen ends."""
    w = torch.ones(size, dtype=torch.float32)
    ramp = min(ramp, size)
    if ramp > 0:
        up = (torch.arange(ramp, dtype=torch.float32) + 0.5) / ramp
        if ramp_start:
            w[:ramp] = torch.minimum(w[:ramp], up)
        if ramp_end:
            w[size - ramp:] = torch.minimum(w[size - ramp:], up.flip(0))
    return w


def wrap_pad_x(latent: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last axis with `pad` wrapped columns on each side (requires pad <= width)."""
    if pad <= 0:
        return latent
    if pad > latent.shape[-1]:
        raise ValueError(f"wrap padding {pad} exceeds the width {latent.shape[-1]}")
    return torch.cat([latent[..., -pad:], latent, latent[..., :pad]], dim=-1)


def decode_circular(latent: torch.Tensor, decode_fn: DecodeFn, pad: int, scale: int) -> torch.Tensor:
    """Untiled decode of a horizontally periodic latent: wrap-pad by `pad`, decode, crop pad*scale px."""
    pad = min(pad, latent.shape[-1])
    out = decode_fn(wrap_pad_x(latent, pad)).float()
    if pad:
        out = out[..., pad * scale: out.shape[-1] - pad * scale]
    return out


def decode_tiled(latent: torch.Tensor, decode_fn: DecodeFn, tile: int, overlap: int, scale: int,
                 circular_x: bool = False, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Decode `latent` tile by tile and blend (see module Convention). Returns [B,Co,h*scale,w*scale] float32."""
    if latent.ndim != 4:
        raise ValueError(f"latent must be [B,C,h,w], got shape {tuple(latent.shape)}")
    _, _, h, w = latent.shape
    ys = tile_starts(h, tile, overlap)
    xs = circular_tile_starts(w, tile, overlap) if circular_x else tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    if circular_x and len(xs) == 1:  # one tile spans the whole width: decode it with wrapped context
        tw = w
    out = None
    weight = torch.zeros(h * scale, w * scale, dtype=torch.float32)
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        wy = ramp_weights(th * scale, overlap * scale, y0 > 0, y0 + th < h)
        for x0 in xs:
            if circular_x:
                if len(xs) == 1:
                    pixels = decode_circular(latent[:, :, y0:y0 + th], decode_fn, overlap, scale)
                    wx = torch.ones(w * scale)
                else:
                    cols = (x0 + torch.arange(tw)) % w
                    pixels = decode_fn(latent[:, :, y0:y0 + th].index_select(3, cols.to(latent.device))).float()
                    wx = ramp_weights(tw * scale, overlap * scale, True, True)
                px_cols = (x0 * scale + torch.arange(tw * scale)) % (w * scale)
            else:
                pixels = decode_fn(latent[:, :, y0:y0 + th, x0:x0 + tw]).float()
                wx = ramp_weights(tw * scale, overlap * scale, x0 > 0, x0 + tw < w)
                px_cols = x0 * scale + torch.arange(tw * scale)
            expected = (th * scale, tw * scale)
            if tuple(pixels.shape[-2:]) != expected:
                raise ValueError(f"decode_fn returned {tuple(pixels.shape[-2:])} pixels for a tile, expected {expected}"
                                 f" (scale {scale})")
            if out is None:
                out = torch.zeros(pixels.shape[0], pixels.shape[1], h * scale, w * scale,
                                  dtype=torch.float32, device=pixels.device)
            tile_w = (wy[:, None] * wx[None, :]).to(pixels.device)
            rows = slice(y0 * scale, y0 * scale + th * scale)
            px_cols = px_cols.to(pixels.device)
            out[:, :, rows].index_add_(3, px_cols, pixels * tile_w)
            weight[rows].index_add_(1, px_cols.cpu(), tile_w.cpu())
            done += 1
            if progress is not None:
                progress(done, total)
    return out / weight.to(out.device)
