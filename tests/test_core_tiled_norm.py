"""ldm3d_core.tiled_norm: tiled passes with whole-image GroupNorm statistics and whole-image attention (no ComfyUI).

Oracle: a pointwise network (1x1 convs, GroupNorm, nearest up/downsampling, softmax attention over all pixels) has no
border effects except through GroupNorm and attention, so with whole-image statistics and attention a tiled pass
must equal the untiled one to float precision, while per-tile statistics must not."""

from __future__ import annotations

import pytest
import torch

from ldm3d_core import tiling
from ldm3d_core.tiled_norm import WholeImageNorm, owned_ranges


class GlobalAttention(torch.nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.norm = torch.nn.GroupNorm(2, ch)
        self.q, self.k, self.v = (torch.nn.Conv2d(ch, ch, 1) for _ in range(3))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (m(h).reshape(b, c, -1) for m in (self.q, self.k, self.v))
        att = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)
        return x + (v @ att.transpose(1, 2)).reshape(b, c, hh, ww)


def pointwise_net(up: bool):
    torch.manual_seed(0)
    scale = torch.nn.Upsample(scale_factor=2) if up else torch.nn.AvgPool2d(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 1),
        torch.nn.GroupNorm(4, 8),
        torch.nn.SiLU(),
        GlobalAttention(8),
        scale,
        torch.nn.GroupNorm(2, 8, affine=False),
        torch.nn.Conv2d(8, 3, 1),
    ).eval()


def whole(net):
    norms = [m for m in net if isinstance(m, torch.nn.GroupNorm)]
    return WholeImageNorm(norms, [m for m in net if isinstance(m, GlobalAttention)])


def test_owned_ranges_partition_the_axis():
    for starts, tile, length, circular in (([0, 6, 12, 14], 8, 22, False), ([0, 5, 11, 16], 8, 22, True)):
        covered = [0] * length
        for s, (a, b) in zip(starts, owned_ranges(starts, tile, length, circular)):
            assert 0 <= a < b <= tile
            for u in range(s + a, s + b):
                covered[u % length] += 1
        assert covered == [1] * length


@pytest.mark.parametrize("circular", [False, True])
def test_decode_with_whole_image_statistics_equals_untiled(circular):
    net = pointwise_net(up=True)
    x = torch.randn(2, 3, 12, 28, generator=torch.Generator().manual_seed(1)) * 3 + torch.linspace(-4, 4, 28)
    with torch.no_grad():
        full = net(x)
        ours = tiling.decode_tiled(x, net, 8, 2, 2, circular_x=circular, whole_image=whole(net))
        per_tile = tiling.decode_tiled(x, net, 8, 2, 2, circular_x=circular)
    assert torch.allclose(ours, full, atol=1e-5), (ours - full).abs().max()
    assert (per_tile - full).abs().max() > 1e-2, "per-tile statistics must differ, or the test proves nothing"
    assert all(not hasattr(m, "forward") or "forward" not in vars(m) for m in net), "modules restored"


def test_encode_with_whole_image_statistics_equals_untiled():
    net = pointwise_net(up=False)
    x = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(2)) + torch.linspace(-3, 3, 40)
    with torch.no_grad():
        full = net(x)
        ours = tiling.encode_tiled(x, net, 6, 2, 2, whole_image=whole(net))
    assert torch.allclose(ours, full, atol=1e-5), (ours - full).abs().max()


def test_errors_in_a_tile_are_raised_and_modules_restored():
    net = pointwise_net(up=True)

    def failing(t):
        if t[0, 0, 0, 0] > 1e9:
            return net(t)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        tiling.decode_tiled(torch.zeros(1, 3, 8, 16), failing, 8, 2, 2, whole_image=whole(net))
    assert all("forward" not in vars(m) for m in net)
