"""Core tests for sync_core.fusion and views.fit_window (no ComfyUI). Oracles are plain loops and formulas here."""

from __future__ import annotations

import math

import pytest
import torch

from sync_core import fusion
from sync_core.views import View, average_views, build_view_grid, fit_window


def test_gaussian_weights_follow_the_mixture_of_diffusers_formula():
    h, w, var = 6, 10, 0.01
    got = fusion.gaussian_weights(h, w)
    for y in range(h):
        for x in range(w):
            gy = math.exp(-((y - h / 2) ** 2) / (h * h) / (2 * var)) / math.sqrt(2 * math.pi * var)
            gx = math.exp(-((x - (w - 1) / 2) ** 2) / (w * w) / (2 * var)) / math.sqrt(2 * math.pi * var)
            assert got[y, x].item() == pytest.approx(gy * gx, rel=1e-6)
    assert (got > 0).all() and torch.equal(got[:, :5], got[:, 5:].flip(1))  # columns symmetric about (w-1)/2


def test_spot_shifts_are_seeded_and_inside_the_stride():
    a, b = fusion.spot_shifts(7, 50, (4, 6)), fusion.spot_shifts(7, 50, (4, 6))
    assert a == b and a != fusion.spot_shifts(8, 50, (4, 6))
    assert all(0 <= dy < 4 and 0 <= dx < 6 for dy, dx in a)
    assert len({dx for _, dx in a}) > 1


def _lattice_coverage(size, window, stride, shift):
    """Plain oracle: how many lattice windows ``shift + k * stride`` (k any integer) cover each position."""
    count = [0] * size
    for k in range(-size, size):
        o = shift + k * stride
        for x in range(max(o, 0), min(o + window, size)):
            count[x] += 1
    return count


@pytest.mark.parametrize("circular", [False, True])
def test_spot_grids_cover_everything_with_the_lattice_weights(circular):
    h, w, window, stride = 12, 30, (6, 8), (3, 5)
    for dy in range(stride[0]):
        for dx in range(stride[1]):
            views, weights = fusion.spot_grid(h, w, window, stride, (dy, dx), circular)
            total = torch.zeros(h, w, dtype=torch.float64)
            for v, wv in zip(views, weights):
                assert 0 <= v.top and v.top + v.height <= h and v.height == 6 and v.width == 8
                assert circular or v.left + v.width <= w
                for c in range(v.left, v.left + v.width):
                    total[v.top : v.top + v.height, c % w] += wv[:, c - v.left].double()
            rows = torch.tensor(_lattice_coverage(h, 6, 3, dy), dtype=torch.float64)
            if circular:  # columns: the unshifted circular grid rolled by dx, every view weighted 1
                base = build_view_grid(h, w, window, stride, circular=True)
                assert sorted({(v.left - dx) % w for v in views}) == sorted({v.left for v in base})
                assert (total > 0).all()
            else:
                cols = torch.tensor(_lattice_coverage(w, 8, 5, dx), dtype=torch.float64)
                assert torch.equal(total, torch.outer(rows, cols)), (dy, dx)


def test_spot_borders_move_on_a_plain_axis():
    """Where the weight sum changes (a seam) is a lattice border; over all shifts no border stays put (the old
    clamped grid kept one at x = window and x = size - window for every shift)."""
    size, window, stride = 40, 8, 8
    borders = []
    for shift in range(stride):
        axis = fusion.spot_axis(size, window, stride, shift)
        total = torch.zeros(size, dtype=torch.float64)
        seams = set()
        for o, mask in axis:
            total[o : o + window] += mask
            seams |= {o + i for i in range(1, window) if mask[i] != mask[i - 1]}
            seams |= {o} - {0} if mask[0] > 0 else set()
            seams |= {o + window} - {size} if mask[-1] > 0 else set()
        assert torch.equal(total, torch.ones(size, dtype=torch.float64)), shift
        assert seams == {x for x in range(1, size) if (x - shift) % stride == 0}, shift
        borders.append(seams)
    assert set.intersection(*borders) == set()
    assert len(fusion.spot_axis(size, window, stride, 3)) == size // stride + 1  # one view more than unshifted


def test_weighted_average_equals_a_plain_weighted_loop():
    g = torch.Generator().manual_seed(0)
    views = build_view_grid(8, 20, (4, 6), (2, 4), circular=True)
    tiles = torch.randn(len(views), 2, 4, 6, generator=g)
    weights = fusion.gaussian_weights(4, 6)
    value, total = torch.zeros(2, 8, 20), torch.zeros(8, 20)
    for tile, v in zip(tiles, views):
        for i in range(v.height):
            for j in range(v.width):
                value[:, v.top + i, (v.left + j) % 20] += weights[i, j] * tile[:, i, j]
                total[v.top + i, (v.left + j) % 20] += weights[i, j]
    assert torch.allclose(fusion.weighted_average(tiles, views, weights, 8, 20), value / total, atol=1e-6)
    assert torch.allclose(fusion.weighted_average(tiles, views, None, 8, 20), average_views(tiles, views, 8, 20))


def test_fit_window_clamps_each_axis_and_its_stride():
    assert fit_window(8, 32, (16, 8), (12, 4)) == ((8, 8), (8, 4), ["window height 16 > latent height 8: clamped to 8"])
    assert fit_window(8, 32, (8, 8), (4, 4)) == ((8, 8), (4, 4), [])
    assert build_view_grid(8, 32, *fit_window(8, 32, (16, 40), (4, 4))[:2]) == [View(0, 0, 8, 32)]


def test_unknown_fusion_is_refused():
    with pytest.raises(ValueError, match="fusion must be one of"):
        fusion.check_fusion("median")


def _seam_ratio(grid_at, h=64, w=64, window=16, steps=40):
    """Views that disagree (a random bias per view, row and step, as independent tiles do) fused over the steps: the
    mean jump between neighbouring columns at x = window and x = w - window over the mean jump elsewhere."""
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(h, w)
    for i in range(steps):
        views, weights = grid_at(i)
        tiles = torch.randn(len(views), h, 1, generator=g).expand(len(views), h, window)
        x = x + fusion.weighted_average(tiles, views, weights, h, w)
    jumps = (x[:, 1:] - x[:, :-1]).abs().mean(0)  # jumps[c - 1]: between columns c - 1 and c
    fixed = torch.tensor([window - 1, w - window - 1])
    others = torch.ones(w - 1, dtype=torch.bool)
    others[fixed] = False
    return (jumps[fixed].mean() / jumps[others].mean()).item()


@pytest.mark.parametrize("stride", [16, 8])
def test_spot_fusion_leaves_no_seam_where_fixed_borders_would(stride):
    h, w, window = 64, 64, 16
    shifts = fusion.spot_shifts(5, 40, (h, stride))

    def spot(i):
        return fusion.spot_grid(h, w, (h, window), (h, stride), (0, shifts[i][1]))

    clamped = _seam_ratio(lambda i: (spot(i)[0], None))  # the same views fused whole: the old clamped spot grid
    fixed = _seam_ratio(lambda i: (build_view_grid(h, w, (h, window), (h, stride)), None))
    assert fixed > 1.8 and clamped > 1.8, "fixed borders must fail the seam test, or it proves nothing"
    assert _seam_ratio(spot) < 1.4
