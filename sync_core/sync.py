"""The SyncDiffusion synchronisation step (LPIPS gradient descent towards the anchor view), pure torch.

Official algorithm (KAIST SyncDiffusion, ``sample_syncdiffusion``): at a sync step, every non-anchor view latent ``z``
(in DDIM coordinates, i.e. the VP latent ``x_t``) is moved by one plain gradient step

    z' = z - w_i * dL/dz,   L = LPIPS(2*clamp(D(x0(z)), 0, 1) - 1, 2*I_anchor - 1)

where ``x0(z)`` is the CFG'd denoised prediction (gradient through the denoiser), ``D`` the VAE decoder mapped to
[0, 1], and ``I_anchor = clamp(D(x0(z_anchor)))`` computed once, without gradient, from the pre-update anchor latent.
The anchor keeps its latent. Then every view is denoised from its own updated latent and the views are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["SyncSchedule", "sync_views"]


@dataclass(frozen=True)
class SyncSchedule:
    """When to synchronise and with which weight.

    - ``weight`` (w, official 20), ``decay`` (0.95 paper / 0.99 demos), ``freq`` (official ``sync_freq``),
      ``steps`` (official ``sync_thres``: sync only while the step index ``i < steps``).
    - Step indices ``i`` are 0-based indices of the sampler steps actually run (for a partial denoise, count from the
      first executed step); ``total_steps`` is how many steps run.
    - ``steps`` and ``freq`` count real sampler steps: step ``i`` syncs iff ``(i + 1) % freq == 0 and i < steps``
      (the official test, whatever ``total_steps`` is).
    - The decay exponent is rescaled to the official 50-step schedule: ``w_i = w * decay ** k`` with
      ``k = i * reference_steps / total_steps``, so a 20-step run decays over its schedule like a 50-step run does.
      With ``total_steps == reference_steps`` (or ``reference_steps == 0``, which disables rescaling), ``k = i``,
      exactly the official ``exponential_decay_list``.
    """

    weight: float = 20.0
    decay: float = 0.95
    freq: int = 1
    steps: int = 10
    reference_steps: int = 50

    def __post_init__(self):
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"sync weight must be a finite number >= 0, got {self.weight}")
        if not math.isfinite(self.decay) or self.decay <= 0:
            raise ValueError(f"sync decay must be > 0 (e.g. 0.95), got {self.decay}")
        if int(self.freq) != self.freq or self.freq < 1:
            raise ValueError(f"sync freq must be an integer >= 1, got {self.freq}")
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"sync steps must be an integer >= 0, got {self.steps}")
        if int(self.reference_steps) != self.reference_steps or self.reference_steps < 0:
            raise ValueError(f"reference steps must be an integer >= 0, got {self.reference_steps}")

    def is_sync_step(self, i: int, total_steps: int) -> bool:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if not 0 <= i < total_steps:
            return False
        return self.weight > 0 and (i + 1) % self.freq == 0 and i < self.steps

    def decay_exponent(self, i: int, total_steps: int) -> float:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        if self.reference_steps == 0 or total_steps == self.reference_steps:
            return float(i)
        return i * self.reference_steps / total_steps

    def weight_at(self, i: int, total_steps: int) -> float:
        """``w * decay ** k`` (see the class docstring for ``k``); 0 on steps that do not sync."""
        if not self.is_sync_step(i, total_steps):
            return 0.0
        return float(self.weight * self.decay ** self.decay_exponent(i, total_steps))

    def sync_step_indices(self, total_steps: int) -> list[int]:
        return [i for i in range(total_steps) if self.is_sync_step(i, total_steps)]


def _as_per_sample(loss: Tensor, n: int) -> Tensor:
    loss = loss.reshape(loss.shape[0], -1).sum(dim=1) if loss.dim() > 1 else loss.reshape(-1)
    if loss.shape[0] != n:
        raise ValueError(f"perceptual loss returned {loss.shape[0]} values for {n} image pairs")
    return loss


_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _next_batch_size(view_batch_size: int | Callable[[int], int], remaining: int) -> int:
    n = view_batch_size(remaining) if callable(view_batch_size) else view_batch_size
    if int(n) != n or n < 1:
        raise ValueError(f"view batch size must be an integer >= 1, got {n!r}")
    return min(int(n), remaining)


def sync_views(
    view_latents: Tensor,
    anchor: int,
    predict_x0: Callable[[Tensor, Sequence[int]], Tensor],
    decode: Callable[[Tensor], Tensor],
    perceptual: Callable[[Tensor, Tensor], Tensor],
    weight: float,
    view_batch_size: int | Callable[[int], int] = 1,
    clamp_decoded: bool = True,
    return_losses: bool = False,
    anchor_image: Tensor | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """One SyncDiffusion gradient step on every non-anchor view.

    Convention:
        view_latents: ``[V, B, C, h, w]`` (equal-size views), in the coordinates ``predict_x0`` differentiates
        against (the DDIM/VP latent for the official update). ``predict_x0(latents [n,B,C,h,w], view_ids) ->
        [n,B,C,h,w]`` CFG'd x0, differentiable. ``decode(x0 [N,C,h,w]) -> [N,3,Hp,Wp]`` in [0,1], differentiable.
        ``perceptual(a, b)`` on [-1,1] images -> ``[N,1,1,1]`` or ``[N]``.

    Returns detached updated latents ``[V,B,C,h,w]`` (anchor unchanged; view ``v``: ``z - weight * dL/dz`` with
    ``L`` summed over its batch; samples are independent), and with ``return_losses=True`` also the per-view
    perceptual losses ``[V, B]`` before the update (0 for the anchor). Inputs are not mutated.
    ``view_batch_size`` views go through the models at once; the result does not depend on it. It may be a
    callable ``planner(remaining_views) -> n`` asked before every batch (see ``sync_core.batching``); when a batch
    runs out of device memory it is retried at half the size (``planner.shrink(n)`` is told, if it has one).
    ``perceptual`` may have ``prepare(ref) -> target`` and ``compare(img, target)`` (``PerceptualLoss``): then the
    anchor's features are computed once per call instead of once per batch.
    ``anchor_image``: optional precomputed anchor image ``[B,3,Hp,Wp]`` in [0,1] (clamped here when
    ``clamp_decoded``); by default it is ``decode(predict_x0(anchor latent))`` without gradient.
    """
    if view_latents.dim() != 5:
        raise ValueError(f"view_latents must be [V, B, C, h, w], got shape {tuple(view_latents.shape)}")
    n_views, batch = view_latents.shape[0], view_latents.shape[1]
    if not 0 <= anchor < n_views:
        raise ValueError(f"anchor index {anchor} is out of range for {n_views} views")
    if not callable(view_batch_size) and (int(view_batch_size) != view_batch_size or view_batch_size < 1):
        raise ValueError(f"view_batch_size must be >= 1, got {view_batch_size}")
    if not math.isfinite(weight):
        raise ValueError(f"sync weight must be finite, got {weight}")

    with torch.inference_mode(False):
        # clone() outside inference mode turns inference tensors into normal ones (autograd needs them).
        out = view_latents.detach().clone()
        losses = torch.zeros(n_views, batch, dtype=torch.float32, device=view_latents.device)
        if weight == 0 and not return_losses:
            return out
        others = [v for v in range(n_views) if v != anchor]
        if not others:
            return (out, losses) if return_losses else out

        with torch.no_grad():
            if anchor_image is None:
                ref = decode(predict_x0(out[anchor : anchor + 1].clone(), [anchor]).flatten(0, 1))
            else:
                ref = anchor_image.detach().clone()
                if ref.dim() != 4 or ref.shape[0] != batch:
                    raise ValueError(f"anchor_image must be [B={batch}, 3, H, W], got {tuple(ref.shape)}")
            if clamp_decoded:
                ref = ref.clamp(0, 1)
            ref = (2 * ref - 1).detach()  # [B, 3, Hp, Wp]
            split = hasattr(perceptual, "prepare") and hasattr(perceptual, "compare")
            target = perceptual.prepare(ref) if split else None

        def one_batch(ids: list[int]) -> None:
            z = out[ids].clone().requires_grad_(True)  # [n, B, C, h, w]
            x0 = predict_x0(z, ids)
            if tuple(x0.shape[:2]) != (len(ids), batch):
                raise ValueError(f"predict_x0 returned shape {tuple(x0.shape)} for {len(ids)} views of batch {batch}")
            img = decode(x0.flatten(0, 1))
            if clamp_decoded:
                img = img.clamp(0, 1)
            if split:
                raw = perceptual.compare(2 * img - 1, target)
            else:
                raw = perceptual(2 * img - 1, ref.unsqueeze(0).expand(len(ids), *ref.shape).flatten(0, 1))
            loss = _as_per_sample(raw, len(ids) * batch)
            (grad,) = torch.autograd.grad(loss.sum(), z)
            losses[ids] = loss.detach().float().reshape(len(ids), batch)
            if weight != 0:
                out[ids] = (z - weight * grad).detach()

        with torch.enable_grad():
            start, cap = 0, len(others)
            while start < len(others):
                n = min(_next_batch_size(view_batch_size, len(others) - start), cap)
                try:
                    one_batch(others[start : start + n])
                except _OUT_OF_MEMORY:
                    if n == 1:
                        raise
                    cap = max(1, n // 2)
                    if hasattr(view_batch_size, "shrink"):
                        view_batch_size.shrink(n)
                    continue
                start += n
    return (out, losses) if return_losses else out
