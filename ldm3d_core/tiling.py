"""Tiled and horizontally circular (360 degree) VAE decoding and encoding, with feathered blending (pure torch).

The one tiling implementation of the pack: the LDM3D decoder and the generic `VAE Decode (360 / Tiled)` /
`VAE Encode (Tiled)` nodes (any ComfyUI VAE, 4 or 16 latent channels) all call `tiled_apply`.

Convention:
    latent : [B,C,h,w] (NCHW, latent pixels); decode_fn maps a latent tile [B,C,th,tw] to pixels
             [B,Co,th*scale,tw*scale] (NCHW). Output [B,Co,h*scale,w*scale] float32.
    Encoding is the same with the roles swapped: pixels [B,Ci,h*scale,w*scale] -> latent [B,C,h,w]; tiles are
    cut on the latent grid (every pixel tile starts on a multiple of `scale`), so `in_scale`/`out_scale` of
    `tiled_apply` are (1, scale) to decode and (scale, 1) to encode.
    tile / overlap are in latent pixels (grid units). Tiles are blended with weights that ramp linearly over the
    overlap (value (i + 0.5) / ramp at pixel i of a ramp) on interior edges only and are 1 elsewhere;
    the result is sum(w * tile) / sum(w), so a decode_fn without border effects is reproduced exactly.
    circular_x: the x axis is periodic (an equirectangular panorama, column w-1 touches column 0).
    Tiles then wrap around the seam, and an untiled decode is done on a latent padded with wrapped
    columns (pad latent pixels each side) that are cropped off afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .tiled_norm import WholeImageNorm, owned_ranges

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
            w[size - ramp :] = torch.minimum(w[size - ramp :], up.flip(0))
    return w


def wrap_pad_x(latent: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last axis with `pad` wrapped columns on each side (requires pad <= width)."""
    if pad <= 0:
        return latent
    if pad > latent.shape[-1]:
        raise ValueError(f"wrap padding {pad} exceeds the width {latent.shape[-1]}")
    return torch.cat([latent[..., -pad:], latent, latent[..., :pad]], dim=-1)


def apply_circular(x: torch.Tensor, fn: DecodeFn, pad: int, in_scale: int, out_scale: int) -> torch.Tensor:
    """Untiled pass over a horizontally periodic input: wrap-pad by `pad` grid units (pad*in_scale columns),
    apply `fn`, crop pad*out_scale columns each side. pad is clamped to the width in grid units."""
    pad = min(pad, x.shape[-1] // in_scale)
    out = fn(wrap_pad_x(x, pad * in_scale)).float()
    if pad:
        out = out[..., pad * out_scale : out.shape[-1] - pad * out_scale]
    return out


def decode_circular(latent: torch.Tensor, decode_fn: DecodeFn, pad: int, scale: int) -> torch.Tensor:
    """Untiled decode of a horizontally periodic latent: wrap-pad by `pad`, decode, crop pad*scale px."""
    return apply_circular(latent, decode_fn, pad, 1, scale)


def decode_tiled(
    latent: torch.Tensor, decode_fn: DecodeFn, tile: int, overlap: int, scale: int, **options
) -> torch.Tensor:
    """Decode `latent` tile by tile and blend (see module Convention). Returns [B,Co,h*scale,w*scale] float32.
    `options`: `tiled_apply`'s circular_x, progress and whole_image."""
    if latent.ndim != 4:
        raise ValueError(f"latent must be [B,C,h,w], got shape {tuple(latent.shape)}")
    return tiled_apply(latent, decode_fn, tile, overlap, 1, scale, **options)


def encode_tiled(
    pixels: torch.Tensor, encode_fn: DecodeFn, tile: int, overlap: int, scale: int, **options
) -> torch.Tensor:
    """Encode pixels [B,Ci,H,W] (H, W multiples of `scale`) tile by tile -> latent [B,C,H/scale,W/scale] float32.
    `tile`/`overlap` in latent pixels; blending as in the module Convention (weights ramp in latent pixels);
    `options` as in `decode_tiled`."""
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be [B,C,H,W], got shape {tuple(pixels.shape)}")
    if pixels.shape[-2] % scale or pixels.shape[-1] % scale:
        raise ValueError(f"pixel size {tuple(pixels.shape[-2:])} is not a multiple of the VAE scale {scale}")
    return tiled_apply(pixels, encode_fn, tile, overlap, scale, 1, **options)


def tiled_apply(
    x: torch.Tensor,
    fn: DecodeFn,
    tile: int,
    overlap: int,
    in_scale: int,
    out_scale: int,
    circular_x: bool = False,
    progress: Callable[[int, int], None] | None = None,
    whole_image: WholeImageNorm | None = None,
) -> torch.Tensor:
    """Apply `fn` tile by tile on a grid of [h, w] = x.shape[-2:] // in_scale units and blend the outputs.

    Convention: x [B,Ci,h*in_scale,w*in_scale]; fn maps [B,Ci,th*in_scale,tw*in_scale] to
    [B,Co,th*out_scale,tw*out_scale]; returns [B,Co,h*out_scale,w*out_scale] float32 on fn's device.
    Tiles of `tile` units overlap by >= `overlap` units; weights ramp over overlap*out_scale output pixels
    on interior edges (all edges of wrapping tiles), so a border-free fn is reproduced exactly.
    circular_x: tiles wrap around the x seam; a single tile spanning the width uses `apply_circular` with
    `overlap` units of wrap padding instead.
    whole_image: GroupNorm statistics and attention over the whole image (ldm3d_core.tiled_norm); the tiles then
    run together (their outputs are kept until blended).
    """
    h, w = x.shape[-2] // in_scale, x.shape[-1] // in_scale
    ys = tile_starts(h, tile, overlap)
    xs = circular_tile_starts(w, tile, overlap) if circular_x else tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    if circular_x and len(xs) == 1:  # one tile spans the whole width: run it with wrapped context
        tw = w
    s_in, s_out = in_scale, out_scale
    synced = None
    if whole_image and len(ys) * len(xs) > 1 and not (circular_x and len(xs) == 1):
        synced = iter(_run_whole_image(x, fn, whole_image, ys, xs, (th, tw), (h, w), s_in, circular_x))
    out = None
    weight = torch.zeros(h * s_out, w * s_out, dtype=torch.float32)
    total, done = len(ys) * len(xs), 0
    for y0 in ys:
        wy = ramp_weights(th * s_out, overlap * s_out, y0 > 0, y0 + th < h)
        rows_in = x[:, :, y0 * s_in : (y0 + th) * s_in]
        for x0 in xs:
            if circular_x:
                if len(xs) == 1:
                    result = apply_circular(rows_in, fn, overlap, s_in, s_out)
                    wx = torch.ones(w * s_out)
                else:
                    if synced is not None:
                        result = next(synced).float()
                    else:
                        cols = (x0 * s_in + torch.arange(tw * s_in)) % (w * s_in)
                        result = fn(rows_in.index_select(3, cols.to(x.device))).float()
                    wx = ramp_weights(tw * s_out, overlap * s_out, True, True)
                out_cols = (x0 * s_out + torch.arange(tw * s_out)) % (w * s_out)
            else:
                part = None if synced is not None else rows_in[..., x0 * s_in : (x0 + tw) * s_in]
                result = (next(synced) if part is None else fn(part)).float()
                wx = ramp_weights(tw * s_out, overlap * s_out, x0 > 0, x0 + tw < w)
                out_cols = x0 * s_out + torch.arange(tw * s_out)
            expected = (th * s_out, tw * s_out)
            if tuple(result.shape[-2:]) != expected:
                raise ValueError(
                    f"the VAE returned {tuple(result.shape[-2:])} pixels for a tile, expected {expected}"
                    f" (scale {max(s_in, s_out)})"
                )
            if out is None:
                out = torch.zeros(
                    result.shape[0], result.shape[1], h * s_out, w * s_out, dtype=torch.float32, device=result.device
                )
            tile_w = (wy[:, None] * wx[None, :]).to(result.device)
            rows = slice(y0 * s_out, (y0 + th) * s_out)
            out_cols = out_cols.to(result.device)
            out[:, :, rows].index_add_(3, out_cols, result * tile_w)
            weight[rows].index_add_(1, out_cols.cpu(), tile_w.cpu())
            done += 1
            if progress is not None:
                progress(done, total)
    return out / weight.to(out.device)


def _run_whole_image(
    x: torch.Tensor,
    fn: DecodeFn,
    whole_image: WholeImageNorm,
    ys: list[int],
    xs: list[int],
    tile_hw: tuple[int, int],
    canvas_hw: tuple[int, int],
    s_in: int,
    circular_x: bool,
) -> list[torch.Tensor]:
    """All tiles of `tiled_apply` through `whole_image.run`, in its (row-major) order."""
    th, tw = tile_hw
    rows, cols = owned_ranges(ys, th, canvas_hw[0]), owned_ranges(xs, tw, canvas_hw[1], circular_x)
    inputs, origins, owned = [], [], []
    for y0, rows_owned in zip(ys, rows):
        for x0, cols_owned in zip(xs, cols):
            col_ids = (x0 * s_in + torch.arange(tw * s_in)) % (canvas_hw[1] * s_in)
            part = x[:, :, y0 * s_in : (y0 + th) * s_in].index_select(3, col_ids.to(x.device))
            inputs.append(part)
            origins.append((y0, x0))
            owned.append((rows_owned, cols_owned))
    return whole_image.run(fn, inputs, origins, owned, tile_hw, canvas_hw, circular_x)
