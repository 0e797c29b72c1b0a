"""Whole-image GroupNorm statistics for the tiled VAE nodes: which modules of a ComfyUI VAE to synchronise.

ldm3d_core.tiled_norm does the work; here: the GroupNorms of the VAE's encoder or decoder and its attention blocks
(ComfyUI's `AttnBlock`, run once on the whole image; the GroupNorm inside each runs with it). VAEs without either
(TAESD) tile as before. Samples of a batch are tiled one by one, since the statistics are per sample.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...ldm3d_core.tiled_norm import WholeImageNorm


def whole_image_norm(vae, part: str) -> WholeImageNorm | None:
    """`part` "decoder" or "encoder" of vae.first_stage_model; None when it has no GroupNorm or attention."""
    model = getattr(getattr(vae, "first_stage_model", None), part, None)
    if not isinstance(model, torch.nn.Module):
        return None
    attentions = [m for m in model.modules() if type(m).__name__ == "AttnBlock"]
    inside = {id(n) for a in attentions for n in a.modules()}
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm) and id(m) not in inside]
    return WholeImageNorm(norms, attentions) if norms or attentions else None


def per_sample(tiled: Callable[..., torch.Tensor], x: torch.Tensor, *args, whole_image=None, **kwargs):
    """`tiled(x, *args, whole_image=..., **kwargs)`, one sample at a time when whole_image is set."""
    if whole_image is None or x.shape[0] == 1:
        return tiled(x, *args, whole_image=whole_image, **kwargs)
    return torch.cat([tiled(x[i : i + 1], *args, whole_image=whole_image, **kwargs) for i in range(x.shape[0])])
