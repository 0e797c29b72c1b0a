"""Helpers shared by every node module: categories, actionable errors, tensor checks.

Nothing here does math; it only formats errors and checks what ComfyUI hands a node.
"""

from __future__ import annotations

import math

import torch

PACK_CATEGORY = "syncdiffusion-ldm3d"
CATEGORY_SAMPLING = f"{PACK_CATEGORY}/sampling"
CATEGORY_LDM3D = f"{PACK_CATEGORY}/ldm3d"
CATEGORY_DEPTH = f"{PACK_CATEGORY}/depth"
CATEGORY_STEREO = f"{PACK_CATEGORY}/stereo360"
CATEGORY_MESH = f"{PACK_CATEGORY}/mesh"
CATEGORY_LOADERS = f"{PACK_CATEGORY}/loaders"


class NodeInputError(ValueError):
    """A user-facing input error. The message names node, input, value and fix."""

    # ComfyUI reports `module.qualname` as the error type, and loads a pack under its install path as the
    # module name: a fixed name keeps server paths out of every error the UI and /history show.
    __module__ = "syncdiffusion_ldm3d"


# ComfyUI shows `module.qualname` as the error type; the pack is imported under its folder path, so name the
# module plainly (the error history then reads "syncdiffusion_ldm3d.NodeInputError", not a file path).
NodeInputError.__module__ = PACK_CATEGORY.replace("-", "_")


def input_error(node: str, input_name: str, value, problem: str, fix: str) -> NodeInputError:
    """Build the pack's standard error: '<node>: input '<name>' = <value>: <problem>. Fix: <fix>'."""
    shown = _describe(value)
    return NodeInputError(f"{node}: input '{input_name}' = {shown}: {problem}. Fix: {fix}")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, dict) and "samples" in value:
        return f"LATENT{tuple(value['samples'].shape)}"
    if not isinstance(value, (str, int, float, bool, type(None), tuple, list)):
        return f"<{type(value).__name__}>"  # never an object repr (install path, memory address)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def require_image(node: str, input_name: str, image, channels: tuple[int, ...] = (3,)) -> torch.Tensor:
    """Check an IMAGE tensor is [B,H,W,C] with C in `channels` and finite values."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise input_error(node, input_name, image, "expected an IMAGE tensor [batch, height, width, channels]",
                          "connect an IMAGE output (e.g. Load Image or VAE Decode)")
    if image.shape[-1] not in channels:
        raise input_error(node, input_name, image, f"expected {' or '.join(map(str, channels))} channels, "
                          f"got {image.shape[-1]}", "convert the image to RGB first")
    require_finite(node, input_name, image)
    return image


def require_mask(node: str, input_name: str, mask) -> torch.Tensor:
    """Accept a MASK [B,H,W] (or [H,W]) and return it as float [B,H,W]; values must be finite."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise input_error(node, input_name, mask, "expected a MASK tensor [batch, height, width]",
                          "connect a MASK output (e.g. LDM3D Decode's depth or Load Depth PNG)")
    mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
    require_finite(node, input_name, mask)
    return mask.float()


def require_finite(node: str, input_name: str, tensor: torch.Tensor) -> None:
    """Raise if the tensor holds NaN or inf values, saying how many."""
    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise input_error(node, input_name, tensor, f"contains {bad} NaN/inf values",
                          "fix the upstream node (NaNs usually come from an fp16 VAE; decode in fp32)")


def require_same_size(node: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor,
                      a_hw: tuple[int, int], b_hw: tuple[int, int]) -> None:
    """Raise if two inputs do not share height and width."""
    if tuple(a_hw) != tuple(b_hw):
        raise input_error(node, name_b, b, f"size {b_hw[1]}x{b_hw[0]} (WxH) differs from '{name_a}' "
                          f"{a_hw[1]}x{a_hw[0]}", f"resize one of them so both are {a_hw[1]}x{a_hw[0]}")


def finite_or_inf(value: float) -> float:
    """Map the UI convention 'value <= 0 means infinity' onto math.inf."""
    return math.inf if value <= 0 else float(value)
