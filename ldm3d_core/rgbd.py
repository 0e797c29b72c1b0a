"""LDM3D RGB-D split and merge, 16-bit depth codes and the RGB-like depth packing (pure torch).

Convention:
    decoded   : VAE output already denormalised, channels-last float [B,H,W,C] in [0,1], C in {4, 6}
                (ComfyUI's VAE.decode returns exactly this: clamp((x + 1) / 2, 0, 1), same as diffusers'
                `denormalize`, docs/ldm3d_stereo.md).
    rgb       : IMAGE [B,H,W,3] float in [0,1].
    depth     : MASK-shaped [B,H,W] float in [0,1], white (1.0) = near, as LDM3D emits (docs/ldm3d_stereo.md).
    code      : 16-bit depth code, int32 tensor [B,H,W] in [0, 65535]; depth = code / 65535.
    4-channel : channel 3 is depth.
    6-channel : channels 3..5 are an "RGB-like" depth; code = 256 * round(255 * G) + round(255 * B)
                with G = channel 4 (high byte) and B = channel 5 (low byte); channel 3 (R) is ignored
                when decoding and written equal to G when encoding (docs/ldm3d_stereo.md).
Never goes through diffusers' LDM3D post-processing (it truncates codes and breaks on Pillow >= 12).
"""

from __future__ import annotations

import torch

DEPTH_CODES = 65536
DEPTH_MAX = DEPTH_CODES - 1
LDM3D_CHANNELS = (4, 6)
MODES_6CH = ("exact", "hi_only")


def _check_channels(channels: int) -> None:
    if channels not in LDM3D_CHANNELS:
        raise ValueError(f"LDM3D images have 4 or 6 channels (RGB + depth), got {channels}")


def depth_to_code(depth: torch.Tensor) -> torch.Tensor:
    """Float depth in [0,1] -> int32 16-bit code, round(depth * 65535) (values outside [0,1] are clamped)."""
    return torch.round(depth.double().clamp(0.0, 1.0) * DEPTH_MAX).to(torch.int32)  # fp64: no .5 flips


def code_to_depth(code: torch.Tensor) -> torch.Tensor:
    """int 16-bit code -> float32 depth in [0,1] (code / 65535)."""
    return code.to(torch.float32) / DEPTH_MAX


def split_code(code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """16-bit code -> (high byte, low byte), both int32 in [0,255]."""
    code = code.to(torch.int32)
    return torch.div(code, 256, rounding_mode="floor"), torch.remainder(code, 256)


def bytes_to_unit(hi: torch.Tensor, lo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high byte, low byte) -> the float values in [0,1] an 8-bit channel carries (byte / 255)."""
    return hi.to(torch.float32) / 255.0, lo.to(torch.float32) / 255.0


def unit_to_code(g: torch.Tensor, b: torch.Tensor, mode6: str = "exact") -> torch.Tensor:
    """RGB-like depth channels G (high byte) and B (low byte) in [0,1] -> int32 code 256*G8 + B8.

    `mode6="hi_only"` drops the low byte (a KL-f8 VAE cannot reproduce it; docs/ldm3d_stereo.md).
    """
    if mode6 not in MODES_6CH:
        raise ValueError(f"mode6 must be one of {MODES_6CH}, got {mode6!r}")
    hi = torch.round(g.float().clamp(0.0, 1.0) * 255.0).to(torch.int32)
    lo = torch.round(b.float().clamp(0.0, 1.0) * 255.0).to(torch.int32)
    if mode6 == "hi_only":
        lo = torch.zeros_like(lo)
    return hi * 256 + lo  # int32 throughout: never cast back to uint8 (diffusers #14206)


def pack_depth_rgb(depth: torch.Tensor) -> torch.Tensor:
    """Depth [B,H,W] in [0,1] -> RGB-like IMAGE [B,H,W,3] with R = G = high byte / 255, B = low byte / 255.

    Exact for all 65,536 codes: unpack_depth_rgb(pack_depth_rgb(code_to_depth(c))) == code_to_depth(c).
    """
    hi, lo = bytes_to_unit(*split_code(depth_to_code(depth)))
    return torch.stack([hi, hi, lo], dim=-1)


def unpack_depth_rgb(packed: torch.Tensor, mode6: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """RGB-like depth [..., 3] in [0,1] -> (depth float [...] in [0,1], int32 code [...]). R is ignored."""
    if packed.shape[-1] != 3:
        raise ValueError(f"packed depth needs 3 channels (R, G = high byte, B = low byte), got {packed.shape[-1]}")
    code = unit_to_code(packed[..., 1], packed[..., 2], mode6)
    return code_to_depth(code), code


def split_rgbd(decoded: torch.Tensor, mode6: str = "exact") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decoded LDM3D pixels [B,H,W,C] (C = 4 or 6, values in [0,1]) -> (rgb, depth, code).

    rgb [B,H,W,3] float32, depth [B,H,W] float32 in [0,1] (white = near), code [B,H,W] int32.
    4-channel depth is the float channel 3 as is (code = its rounded 16-bit value); 6-channel depth is
    the 16-bit code from G/B, so depth == code / 65535 exactly.
    """
    if decoded.ndim != 4:
        raise ValueError(f"decoded LDM3D pixels must be [B,H,W,C], got shape {tuple(decoded.shape)}")
    channels = decoded.shape[-1]
    _check_channels(channels)
    c = decoded.float().clamp(0.0, 1.0)
    rgb = c[..., :3].contiguous()
    if channels == 4:
        depth = c[..., 3].contiguous()
        return rgb, depth, depth_to_code(depth)
    code = unit_to_code(c[..., 4], c[..., 5], mode6)
    return rgb, code_to_depth(code), code


def merge_rgbd(rgb: torch.Tensor, depth: torch.Tensor, channels: int) -> torch.Tensor:
    """rgb [B,H,W,3] and depth [B,H,W] (both in [0,1]) -> LDM3D pixels [B,H,W,C] in [0,1] for a VAE encode.

    4-channel: [R, G, B, D] (community SR pipeline layout). 6-channel: [R, G, B, hi, hi, lo] with the
    16-bit code round(D * 65535) split into bytes / 255 (docs/ldm3d_stereo.md). A batch of 1 broadcasts.
    """
    _check_channels(channels)
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must be [B,H,W,3], got shape {tuple(rgb.shape)}")
    if depth.ndim != 3:
        raise ValueError(f"depth must be [B,H,W], got shape {tuple(depth.shape)}")
    if tuple(rgb.shape[1:3]) != tuple(depth.shape[1:3]):
        raise ValueError(f"rgb {tuple(rgb.shape[1:3])} and depth {tuple(depth.shape[1:3])} sizes differ")
    batch = max(rgb.shape[0], depth.shape[0])
    if rgb.shape[0] not in (1, batch) or depth.shape[0] not in (1, batch):
        raise ValueError(f"batch sizes {rgb.shape[0]} and {depth.shape[0]} do not match")
    rgb = rgb.float().clamp(0.0, 1.0).expand(batch, -1, -1, -1)
    depth = depth.float().clamp(0.0, 1.0).expand(batch, -1, -1)
    if channels == 4:
        extra = depth.unsqueeze(-1)
    else:
        extra = pack_depth_rgb(depth)
    return torch.cat([rgb, extra.to(rgb.dtype)], dim=-1).contiguous()


def depth_preview(depth: torch.Tensor) -> torch.Tensor:
    """Depth [B,H,W] in [0,1] -> grey IMAGE [B,H,W,3] (white = near)."""
    return depth.float().clamp(0.0, 1.0).unsqueeze(-1).expand(*depth.shape, 3).contiguous()
