"""The gradient bridge (nodes/sync/gradient_bridge.py) and checkpointed blocks keep in-place updates exact.

Oracle: plain autograd outside inference mode on a module with ordinary weights of the same values (or a closed
form where plain autograd itself refuses the in-place update). Inside, the weights are inference tensors, as in a
ComfyUI node. The old bridge evaluated every in-place add_/sub_/mul_/div_ out of place, so a bare `t.add_(y)`
whose result is not kept was lost: these tests fail on it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def bridge(pack):
    return pack.node_module("sync.gradient_bridge")


@pytest.fixture(scope="module")
def checkpointing(pack):
    import importlib

    return importlib.import_module(f"{pack.nodes.__name__.rsplit('.', 1)[0]}.sync_core.checkpointing")


class BareInPlace(nn.Module):
    """`buf.add_(1)` result not kept (the in-place update is the point); `h += ...` on the block input."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        buf = self.lin(x)
        buf.add_(1.0)  # bare: must change buf
        h = buf * buf
        h += x  # augmented assignment
        return h


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = BareInPlace()

    def forward(self, x):
        h = self.block(x)
        h += 0.5 * x  # after the block: updates its output in place (UNet: h += ctrl)
        return self.block(h).square().sum()


def _inference_copy(module: nn.Module) -> nn.Module:
    with torch.inference_mode():
        copy = type(module)()
        copy.load_state_dict(module.state_dict())
    assert next(copy.parameters()).is_inference()
    return copy.requires_grad_(False)


def _grad_in_bridge(bridge, checkpointing, module, x, checkpoint_names=()):
    with torch.inference_mode():
        x_inf = x.clone()
    with bridge.grad_enabled():
        targets = checkpointing.outermost_modules(module, checkpoint_names)
        with checkpointing.checkpointed(targets, enabled=bool(targets), context=bridge.weight_bridge):
            xi = x_inf.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(module(xi), xi)
    return g


def test_toy_bare_add_counts_inside_the_bridge(bridge):
    with torch.inference_mode():
        w = torch.ones(())
    with bridge.grad_enabled():
        x = torch.ones((), requires_grad=True)
        buf = x * w
        buf.add_(1.0)
        buf.add_(1.0)
        assert float(buf.detach()) == 3.0  # the old bridge gave 2.0


@pytest.mark.parametrize("checkpoint_names", [(), ("BareInPlace",)])
def test_block_with_bare_in_place_update_equals_plain_autograd(bridge, checkpointing, checkpoint_names):
    torch.manual_seed(0)
    plain_module = Outer().requires_grad_(False)
    x = torch.randn(3, 4)
    xp = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(plain_module(xp), xp)
    ours = _grad_in_bridge(bridge, checkpointing, _inference_copy(plain_module), x, checkpoint_names)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    # without the bare add_ the gradient differs: the test can tell the two apart
    lost = Outer().requires_grad_(False)
    lost.load_state_dict(plain_module.state_dict())
    lost.block.lin.bias.data -= 1.0
    xl = x.clone().requires_grad_(True)
    (without,) = torch.autograd.grad(lost(xl), xl)
    assert (without - plain).abs().max() > 1e-2


class SavedThenUpdated(nn.Module):
    """b is saved by `b * b`, then updated in place and used again: plain autograd refuses this."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.full((), 2.0))

    def forward(self, a):
        b = a * self.scale
        c = b * b
        b.add_(1.0)
        return c.sum() + (b * a).sum()


@pytest.mark.parametrize("checkpoint_names", [(), ("SavedThenUpdated",)])
def test_update_of_a_saved_tensor_gives_the_closed_form_gradient(bridge, checkpointing, checkpoint_names):
    a = torch.randn(5)
    # d/da [ (2a)^2 + (2a + 1) a ] = 8a + 4a + 1
    expected = 12.0 * a + 1.0
    ours = _grad_in_bridge(bridge, checkpointing, _inference_copy(SavedThenUpdated()), a, checkpoint_names)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


class MaskedAttention(nn.Module):
    """ComfyUI's attention_basic (its `sim.add_(mask)`) between two projections."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(8, 8)
        self.k = nn.Linear(8, 8)
        self.v = nn.Linear(8, 8)

    def forward(self, x, mask=None):
        from comfy.ldm.modules.attention import attention_basic

        return attention_basic(self.q(x), self.k(x), self.v(x), heads=2, mask=mask).square().sum()


@pytest.mark.parametrize("checkpoint_names", [(), ("MaskedAttention",)])
def test_comfyui_attention_basic_with_a_mask_equals_plain_autograd(bridge, checkpointing, checkpoint_names):
    torch.manual_seed(1)
    module = MaskedAttention().requires_grad_(False)
    x = torch.randn(2, 6, 8)
    mask = torch.zeros(2, 6, 6)
    mask[:, :, 3:] = -1e4  # the last three keys are masked out
    plain_x = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(module(plain_x, mask), plain_x)
    unmasked_x = x.clone().requires_grad_(True)
    (unmasked,) = torch.autograd.grad(module(unmasked_x), unmasked_x)
    assert (plain - unmasked).abs().max() > 1e-3  # the mask matters

    inference = _inference_copy(module)
    with torch.inference_mode():
        mask_inf = mask.clone()

    class Bound(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inference

        def forward(self, x):
            return self.inner(x, mask_inf.clone())

    bound = Bound()
    with torch.inference_mode():
        x_inf = x.clone()
    with bridge.grad_enabled():
        targets = checkpointing.outermost_modules(bound, checkpoint_names)
        with checkpointing.checkpointed(targets, enabled=bool(targets), context=bridge.weight_bridge):
            xi = x_inf.clone().requires_grad_(True)
            (ours,) = torch.autograd.grad(bound(xi), xi)
    torch.testing.assert_close(ours, plain, rtol=1e-4, atol=1e-6)
