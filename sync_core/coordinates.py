"""The VP-equivalent coordinates the SyncDiffusion update is taken in, for every model family (pure torch).

The paper's update ``z' = z - w * dL/dz`` is defined on the VP (DDIM) latent ``z = sqrt(abar) x0 + sqrt(1-abar) e``.
A sampler holds its latent in its own coordinates; for each family the VP latent is a per-step scalar multiple
``z = s(sigma) * x`` of the sampler's latent ``x`` (docs/syncdiffusion.md, "Flow-matching models"):

- ``"vp"``: ComfyUI's eps / v-prediction / EDM models, ``x = x0 + sigma * e`` (VE form of a VP model):
  ``s = 1 / sqrt(sigma^2 + sigma_data^2)`` (``sigma_data = 1`` for every VP model; this is ComfyUI's own
  ``calculate_input``, bit for bit).
- ``"flow"``: flow matching / rectified flow (ComfyUI's CONST sampling: SD3.x, Flux, Chroma, ...),
  ``x = (1 - t) x0 + t e`` with ``t = sigma`` in [0, 1]. ``x / (1 - t) = x0 + sigma_ve e`` with
  ``sigma_ve = t / (1 - t)`` is the VE latent, so ``z = x / (1 - t) / sqrt(1 + sigma_ve^2)``, i.e.
  ``s = 1 / sqrt((1 - t)^2 + t^2)``, finite on all of [0, 1] (``s = 1`` at pure noise ``t = 1`` and clean ``t = 0``).

Both are ``s = 1 / sqrt(a^2 + b^2)`` for ``x = a x0 + b e``: the VP latent is the sampler's latent divided by the
norm of its (signal, noise) coefficients, so the noise level ``b / a`` and hence the sync weight ``w`` mean the same
thing on every family.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["KINDS", "vp_scale", "vp_sigma", "sampler_step_from_vp_gradient"]

KINDS = ("vp", "flow")


def _check(kind: str, sigma: Tensor) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown model sampling kind {kind!r}; expected one of {KINDS}")
    if not torch.isfinite(sigma).all():
        raise ValueError("sigma must be finite")
    if kind == "flow" and ((sigma < 0) | (sigma > 1)).any():
        raise ValueError(f"a flow model's sigma (= t) must lie in [0, 1], got {sigma.tolist()}")
    if kind == "vp" and (sigma < 0).any():
        raise ValueError(f"sigma must be >= 0, got {sigma.tolist()}")


def vp_scale(kind: str, sigma: float | Tensor, sigma_data: float = 1.0) -> Tensor:
    """The scalar ``s`` with ``z_vp = s * x`` at noise level ``sigma`` (see the module docstring).

    Convention:
        kind: ``"vp"`` (x = x0 + sigma e) or ``"flow"`` (x = (1 - sigma) x0 + sigma e, sigma = t in [0, 1]).
        sigma: float or tensor of any shape (the sampler's own sigma, as ComfyUI passes it); the result has its
        shape and (floating) dtype, on its device. ``sigma_data`` only for ``"vp"`` (ComfyUI's EDM models carry it).
    Returns ``1 / sqrt(sigma^2 + sigma_data^2)`` for ``"vp"`` (computed exactly as ComfyUI's
    ``calculate_input(sigma, 1)``), ``1 / sqrt((1 - sigma)^2 + sigma^2)`` for ``"flow"``.
    """
    sigma = torch.as_tensor(sigma)
    if not sigma.is_floating_point():
        sigma = sigma.to(torch.get_default_dtype())
    _check(kind, sigma)
    one = torch.ones_like(sigma)
    if kind == "vp":
        return one / (sigma**2 + sigma_data**2) ** 0.5
    return one / ((1.0 - sigma) ** 2 + sigma**2) ** 0.5


def vp_sigma(kind: str, sigma: float | Tensor) -> Tensor:
    """The VP-equivalent noise-to-signal ratio ``sigma_ve = b / a`` (``inf`` for a flow model at ``t = 1``).

    Convention: as ``vp_scale``; ``"vp"`` returns ``sigma`` itself, ``"flow"`` returns ``t / (1 - t)``. Then
    ``vp_scale = 1 / (a * sqrt(1 + sigma_ve^2))`` with ``a = 1`` (vp) or ``a = 1 - t`` (flow).
    """
    sigma = torch.as_tensor(sigma)
    if not sigma.is_floating_point():
        sigma = sigma.to(torch.get_default_dtype())
    _check(kind, sigma)
    if kind == "vp":
        return sigma.clone()
    return torch.where(
        sigma < 1, sigma / (1.0 - sigma).clamp_min(torch.finfo(sigma.dtype).tiny), torch.full_like(sigma, math.inf)
    )


def sampler_step_from_vp_gradient(
    kind: str, sigma: float | Tensor, weight: float, grad_x: Tensor, sigma_data: float = 1.0
) -> Tensor:
    """The change of the sampler's latent ``x`` made by the VP update ``z' = z - w dL/dz`` (``z = s x``).

    Convention: ``grad_x = dL/dx`` in the sampler's coordinates (any shape); returns ``x' - x = -w / s^2 * dL/dx``
    (``dL/dz = dL/dx / s`` and ``x' = z' / s``), ``1 / s^2 = sigma^2 + sigma_data^2`` (vp) or
    ``(1 - t)^2 + t^2`` (flow).
    """
    s = vp_scale(kind, sigma, sigma_data).to(grad_x)
    return -float(weight) * grad_x / (s * s)
