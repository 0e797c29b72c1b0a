"""sync_core.coordinates: the VP-equivalent scale of eps/v and flow models (pure torch, no ComfyUI)."""

from __future__ import annotations

import math

import pytest
import torch

from sync_core.coordinates import sampler_step_from_vp_gradient, vp_scale, vp_sigma


def test_vp_kind_is_one_over_sqrt_one_plus_sigma_squared():
    sigma = torch.tensor([0.0, 0.03, 1.0, 3.5, 14.6])
    expected = torch.tensor([1 / math.sqrt(1 + s * s) for s in sigma.tolist()])
    assert torch.allclose(vp_scale("vp", sigma), expected, rtol=1e-7, atol=0)
    assert torch.allclose(
        vp_scale("vp", sigma, sigma_data=0.5),
        torch.tensor([1 / math.sqrt(0.25 + s * s) for s in sigma.tolist()]),
        rtol=1e-7,
    )


def test_flow_scale_is_the_vp_latent_of_the_ve_rescaled_flow_latent():
    """z = x / (1 - t) / sqrt(1 + sigma_ve^2) with sigma_ve = t / (1 - t), computed the long way in float64."""
    t = torch.linspace(0.0, 0.99, 23, dtype=torch.float64)
    sigma_ve = t / (1 - t)
    long_way = 1 / (1 - t) / torch.sqrt(1 + sigma_ve**2)
    assert torch.allclose(vp_scale("flow", t), long_way, rtol=1e-12, atol=0)
    assert torch.allclose(vp_sigma("flow", t), sigma_ve, rtol=1e-12)
    assert vp_scale("flow", 1.0).item() == 1.0 and vp_scale("flow", 0.0).item() == 1.0
    assert vp_sigma("flow", 1.0).item() == math.inf


def test_flow_latent_maps_to_a_unit_variance_vp_latent():
    """x = (1-t) x0 + t e with unit x0 and e: s * x has the VP variance abar + (1 - abar) = 1 at every t,
    and its signal fraction is abar = 1 / (1 + sigma_ve^2), exactly as the paper's z_t."""
    gen = torch.Generator().manual_seed(0)
    x0, e = (
        torch.randn(200_000, generator=gen, dtype=torch.float64),
        torch.randn(200_000, generator=gen, dtype=torch.float64),
    )
    for t in (0.1, 0.5, 0.9):
        z = vp_scale("flow", torch.tensor(t, dtype=torch.float64)) * ((1 - t) * x0 + t * e)
        abar = 1 / (1 + (t / (1 - t)) ** 2)
        assert z.var().item() == pytest.approx(1.0, abs=0.02)
        signal = (z * x0).mean().item()  # E[z x0] = sqrt(abar)
        assert signal == pytest.approx(math.sqrt(abar), abs=0.01)


def test_update_in_sampler_coordinates_equals_the_vp_update():
    """x' = x - w / s^2 * dL/dx is z' = z - w dL/dz mapped back, for a loss written in z."""
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    for kind, sigma in (("vp", 2.5), ("flow", 0.7), ("flow", 0.05)):
        s = vp_scale(kind, torch.tensor(sigma, dtype=torch.float64))
        z = (s * x).requires_grad_(True)
        (gz,) = torch.autograd.grad(((z.tanh() - target) ** 2).sum(), z)
        expected = ((z - 3.0 * gz) / s).detach()
        xg = x.clone().requires_grad_(True)
        (gx,) = torch.autograd.grad((((s * xg).tanh() - target) ** 2).sum(), xg)
        got = x + sampler_step_from_vp_gradient(kind, torch.tensor(sigma, dtype=torch.float64), 3.0, gx)
        assert torch.allclose(got, expected, rtol=1e-12, atol=1e-12), kind


def test_shapes_dtypes_and_errors():
    s = vp_scale("flow", torch.full((2, 1), 0.5, dtype=torch.float16))
    assert s.shape == (2, 1) and s.dtype == torch.float16
    assert vp_scale("vp", 2).dtype == torch.get_default_dtype()
    with pytest.raises(ValueError, match="unknown model sampling kind"):
        vp_scale("x0", 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        vp_scale("flow", 1.5)
    with pytest.raises(ValueError, match="finite"):
        vp_scale("vp", float("nan"))
