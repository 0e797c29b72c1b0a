"""Stereo frame layouts for VR players (docs/ldm3d_stereo.md, "Omni-directional stereo").

Convention:
    Eyes are ComfyUI IMAGE tensors [B, H, W, C] or MASK tensors [B, H, W] (masks: top_bottom and
    side_by_side only). ``top_bottom``: left eye on top (Google Spherical Video V2 ``st3d`` mode 1,
    Meta ``_TB``); ``side_by_side``: left eye on the left (mode 2, ``_LR``); ``anaglyph``: red-cyan,
    ``R = left.R, G = right.G, B = right.B``. ``swap_eyes`` exchanges the eyes before packing (cross-eyed
    viewing, or fixing a source whose eyes are reversed).
"""

from __future__ import annotations

import torch

LAYOUTS = ("top_bottom", "side_by_side", "anaglyph")
FILE_SUFFIX = {"top_bottom": "_360_TB", "side_by_side": "_360_LR"}


def pack_stereo(
    left: torch.Tensor, right: torch.Tensor, layout: str = "top_bottom", swap_eyes: bool = False
) -> torch.Tensor:
    """Pack two eyes into one frame (see the module Convention). Inputs are not modified."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    if left.shape != right.shape:
        raise ValueError(f"left {tuple(left.shape)} and right {tuple(right.shape)} must have the same shape")
    if swap_eyes:
        left, right = right, left
    if left.ndim not in (3, 4):
        raise ValueError(f"expected IMAGE [B,H,W,C] or MASK [B,H,W] eyes, got shape {tuple(left.shape)}")
    h_dim, w_dim = (1, 2)
    if layout == "top_bottom":
        return torch.cat([left, right], dim=h_dim)
    if layout == "side_by_side":
        return torch.cat([left, right], dim=w_dim)
    return anaglyph(left, right)


def anaglyph(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Red-cyan anaglyph of two IMAGE tensors [..., C >= 3]: red from ``left``, green and blue from ``right``."""
    if left.shape != right.shape or left.shape[-1] < 3:
        raise ValueError(
            f"anaglyph needs two images of equal shape with >= 3 channels, got "
            f"{tuple(left.shape)} and {tuple(right.shape)}"
        )
    return torch.cat([left[..., :1], right[..., 1:3]], dim=-1)


def unpack_stereo(frame: torch.Tensor, layout: str = "top_bottom") -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``pack_stereo`` for IMAGE [B, H, W, C] frames: returns (first, second) = (left, right)."""
    if layout == "top_bottom":
        h = frame.shape[-3]
        if h % 2:
            raise ValueError(f"top_bottom frame height {h} is odd")
        return frame[..., : h // 2, :, :], frame[..., h // 2 :, :, :]
    if layout == "side_by_side":
        w = frame.shape[-2]
        if w % 2:
            raise ValueError(f"side_by_side frame width {w} is odd")
        return frame[..., : w // 2, :], frame[..., w // 2 :, :]
    raise ValueError(f"cannot unpack layout {layout!r}; use 'top_bottom' or 'side_by_side'")


def detect_layout(height: int, width: int) -> str | None:
    """Guess the layout of a packed 360 frame from its size: square = top_bottom of two 2:1 eyes,
    4:1 = side_by_side; None otherwise."""
    if width == height:
        return "top_bottom"
    if width == 4 * height:
        return "side_by_side"
    return None
