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
