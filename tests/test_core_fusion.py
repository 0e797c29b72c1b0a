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


@pytest.mark.parametrize("circular", [False, True])
def test_shifted_grids_cover_everything_and_shift_zero_is_the_official_grid(circular):
    h, w, window, stride = 12, 30, (6, 8), (3, 5)
    assert fusion.shifted_view_grid(h, w, window, stride, (0, 0), circular) == build_view_grid(
        h, w, window, stride, circular
    )
    for dy in range(stride[0]):
        for dx in range(stride[1]):
            views = fusion.shifted_view_grid(h, w, window, stride, (dy, dx), circular)
            covered = torch.zeros(h, w, dtype=torch.bool)
            for v in views:
                assert 0 <= v.top and v.top + v.height <= h
                assert circular or v.left + v.width <= w
                for c in range(v.left, v.left + v.width):
                    covered[v.top : v.top + v.height, c % w] = True
            assert covered.all(), (dy, dx)
            if circular:  # the columns are the unshifted ones rolled by dx
                base = build_view_grid(h, w, window, stride, circular=True)
                assert sorted({(v.left - dx) % w for v in views}) == sorted({v.left for v in base})


def test_non_circular_shift_never_wraps_and_moves_interior_views():
    offsets = fusion.shifted_axis_offsets(24, 8, 8, 3)
    assert offsets == [0, 3, 11, 16]


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
