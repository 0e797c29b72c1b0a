"""sync_core.checkpointing: checkpointed gradients equal plain autograd; modules are left exactly as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sync_core.checkpointing import checkpointed, outermost_modules


class Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.norm = nn.GroupNorm(2, channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x, scale=1.0):
        return x + scale * self.conv(torch.nn.functional.silu(self.norm(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([Block(8) for _ in range(3)])
        self.inner = nn.Sequential(Block(8), nn.Sequential(Block(8)))
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        h = self.stem(x)
        for i, block in enumerate(self.blocks):
            h = block(h, scale=0.5 + i)
        return self.head(self.inner(h)).square().mean()


def _grad(net, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(x), x)
    return g


def test_checkpointed_gradients_equal_plain_gradients_and_modules_are_restored():
    torch.manual_seed(0)
    net = Net().requires_grad_(False)
    x = torch.randn(2, 3, 16, 16)
    plain = _grad(net, x)
    targets = outermost_modules(net, ["Block"])
    assert len(targets) == 5  # the nested Sequential's Block counts, a Block inside a Block would not
    with checkpointed(targets) as count:
        assert count == 5 and all("forward" in m.__dict__ for m in targets)
        ckpt = _grad(net, x)
        with torch.no_grad():  # no-grad calls go straight through
            assert torch.equal(net(x), Net.forward(net, x))
    assert torch.allclose(ckpt, plain, rtol=1e-5, atol=1e-7) and plain.abs().max() > 0
    assert all("forward" not in m.__dict__ for m in targets)


def test_modules_are_restored_when_the_block_raises_and_outer_patches_survive():
    net = Net()
    sentinel = net.blocks[0].forward
    net.blocks[1].forward = lambda x, scale=1.0: x  # somebody else's instance patch
    patched = net.blocks[1].forward
    with pytest.raises(RuntimeError, match="interrupted"):
        with checkpointed([net.blocks[0], net.blocks[1], net.blocks[0]]):
            raise RuntimeError("interrupted")
    assert "forward" not in net.blocks[0].__dict__ and net.blocks[0].forward == sentinel
    assert net.blocks[1].forward is patched


def test_outermost_modules_skips_matches_inside_matches():
    outer = nn.Sequential(Block(4))
    outer[0].extra = Block(4)
    assert outermost_modules(outer, ["Block"]) == [outer[0]]
    assert outermost_modules(outer, ["Sequential", "Block"]) == [outer]


class _Counting(nn.Module):
    def __init__(self, bare: bool):
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.bare = bare
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        h = self.lin(x)
        if self.bare:
            h.mul_(2.0)  # bare in-place update: the call falls back to plain autograd
        else:
            h += x  # augmented assignment: replayable, stays checkpointed
        return h.square()


@pytest.mark.parametrize("bare", [False, True])
def test_in_place_updates_inside_a_block_keep_plain_gradients(bare):
    torch.manual_seed(0)
    block = _Counting(bare).requires_grad_(False)
    x = torch.randn(3, 4)

    counts = {}

    def grad():
        xi = x.clone().requires_grad_(True)
        out = block(xi)
        counts["forward"] = block.calls
        out2 = out.clone()
        out += 1.0  # the caller updates the block's output in place; the block's own saved values are unaffected
        (g,) = torch.autograd.grad((out * out2).sum(), xi)
        counts["backward"] = block.calls - counts["forward"]
        return g

    plain = grad()
    block.calls = 0
    with checkpointed([block]):
        ours = grad()
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    # checkpointed: one forward, one recomputation in the backward pass; fallback: the aborted checkpointed call and
    # one plain call, nothing recomputed
    assert counts == ({"forward": 2, "backward": 0} if bare else {"forward": 1, "backward": 1})
    assert block.__dict__.get("forward") is None
