"""sync_core.views: grids, crops, averaging (pure torch, no ComfyUI)."""

import math
import random

import pytest
import torch
from oracles.official_loop import get_views as official_get_views

from sync_core.views import (
    View,
    add_view,
    anchor_index,
    average_views,
    build_view_grid,
    coverage_count,
    crop_view,
    crop_views,
    view_batches,
)


def _views_as_tuples(views):
    return [(v.top, v.top + v.height, v.left, v.left + v.width) for v in views]


def _plain_coverage(views, h, w, circular):
    """Plain loop oracle of coverage (with modulo wrap on columns when circular)."""
    count = [[0] * w for _ in range(h)]
    for v in views:
        for r in range(v.top, v.top + v.height):
            for c in range(v.left, v.left + v.width):
                assert r < h
                assert circular or c < w
                count[r][c % w] += 1
    return torch.tensor(count, dtype=torch.float32)


@pytest.mark.parametrize(
    "px_h,px_w,n_views,anchor_cols",
    [
        (512, 1024, 5, None),
        (512, 2048, 13, (96, 160)),
        (512, 3072, 21, (160, 224)),
        (512, 4096, 29, None),
        (1024, 2048, 65, None),
    ],
)
def test_official_counts_and_anchor(px_h, px_w, n_views, anchor_cols):
    views = build_view_grid(px_h // 8, px_w // 8, 64, 16)
    assert len(views) == n_views
    assert _views_as_tuples(views) == official_get_views(px_h // 8, px_w // 8, 64, 16)
    a = anchor_index(views)
    assert a == n_views // 2
    if anchor_cols is not None:
        assert (views[a].left, views[a].left + views[a].width) == anchor_cols


def test_grid_covers_everything_property():
    rng = random.Random(0)
    cases = 0
    for _ in range(400):
        h, w = rng.randint(1, 24), rng.randint(1, 48)
        wh, ww = rng.randint(1, h), rng.randint(1, w)
        sh, sw = rng.randint(1, wh), rng.randint(1, ww)
        views = build_view_grid(h, w, (wh, ww), (sh, sw))
        count = coverage_count(views, h, w)
        assert torch.equal(count, _plain_coverage(views, h, w, circular=False))
        assert bool((count > 0).all()), (h, w, wh, ww, sh, sw)
        # positions 0, s, 2s, ... plus one flush border view when not divisible
        lefts = sorted({v.left for v in views})
        tops = sorted({v.top for v in views})
        assert lefts[0] == 0 and lefts[-1] == w - ww and tops[0] == 0 and tops[-1] == h - wh
        assert all(b - a == sw for a, b in zip(lefts[:-2], lefts[1:-1]))
        assert len(lefts) == math.ceil((w - ww) / sw) + 1 and len(tops) == math.ceil((h - wh) / sh) + 1
        assert len(views) == len(lefts) * len(tops) and len(set(views)) == len(views)
        # row-major
        assert views == sorted(views, key=lambda v: (v.top, v.left))
        cases += 1
    assert cases == 400


def test_grid_equals_official_when_divisible():
    for h, w, win, s in [(8, 24, 8, 4), (16, 40, 8, 8), (12, 12, 4, 2), (12, 30, 6, 3)]:
        assert _views_as_tuples(build_view_grid(h, w, win, s)) == official_get_views(h, w, win, s)


def test_circular_grid_wraps_and_covers():
    rng = random.Random(1)
    for _ in range(300):
        h, w = rng.randint(1, 12), rng.randint(1, 60)
        wh, ww = rng.randint(1, h), rng.randint(1, w)
        sw = rng.randint(1, ww)
        views = build_view_grid(h, w, (wh, ww), (wh, sw), circular=True)
        lefts = sorted({v.left for v in views})
        assert lefts[0] == 0 and all(0 <= x < w for x in lefts)
        assert len(lefts) == math.ceil(w / sw)
        gaps = [b - a for a, b in zip(lefts, lefts[1:] + [lefts[0] + w])]
        assert max(gaps) <= sw and max(gaps) - min(gaps) <= 1  # evenly spread
        if w % sw == 0:
            assert lefts == list(range(0, w, sw))
        assert all(v.width == ww for v in views)
        count = coverage_count(views, h, w)
        assert torch.equal(count, _plain_coverage(views, h, w, circular=True))
        assert bool((count > 0).all())
    views = build_view_grid(8, 24, 8, 4, circular=True)
    assert [v.left for v in views] == [0, 4, 8, 12, 16, 20]
    assert [v.wraps(24) for v in views] == [False] * 5 + [True]


def test_crop_view_plain_slice_shares_storage_and_wrap_matches_cat():
    x = torch.randn(2, 3, 6, 10)
    x_before = x.clone()
    v = View(1, 2, 4, 5)
    c = crop_view(x, v)
    assert c.data_ptr() == x[..., 1:5, 2:7].data_ptr()
    assert torch.equal(c, x[..., 1:5, 2:7])
    wrap = View(0, 7, 6, 6)  # columns 7, 8, 9, 0, 1, 2
    expected = torch.cat([x[..., 7:10], x[..., 0:3]], dim=-1)
    assert torch.equal(crop_view(x, wrap), expected)
    stacked = crop_views(x, [View(0, 0, 6, 6), wrap])
    assert stacked.shape == (2, 2, 3, 6, 6) and torch.equal(stacked[1], expected)
    assert torch.equal(x, x_before)


def test_crop_view_wrap_is_differentiable():
    x = torch.randn(1, 1, 2, 5, requires_grad=True)
    crop_view(x, View(0, 3, 2, 4)).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[1.0, 1.0, 0.0, 1.0, 1.0]] * 2]]))


def test_add_view_wrap_against_loop():
    acc = torch.zeros(2, 4, 7)
    tile = torch.randn(2, 3, 5)
    v = View(1, 4, 3, 5)
    add_view(acc, tile, v)
    expected = torch.zeros(2, 4, 7)
    for r in range(3):
        for c in range(5):
            expected[:, 1 + r, (4 + c) % 7] += tile[:, r, c]
    assert torch.allclose(acc, expected)
    with pytest.raises(ValueError):
        add_view(acc, torch.zeros(2, 2, 2), v)


def test_average_views_reconstructs_and_matches_value_count_loop():
    x = torch.randn(2, 4, 8, 22)
    for circular in (False, True):
        views = build_view_grid(8, 22, 8, 4, circular=circular)
        tiles = [crop_view(x, v) for v in views]
        assert torch.allclose(average_views(tiles, views, 8, 22), x, atol=1e-6)
        const = [torch.full((2, 4, 8, 8), 3.5) for _ in views]
        assert torch.allclose(average_views(const, views, 8, 22), torch.full_like(x, 3.5))
        # random tiles vs plain value/count loop
        rnd = [torch.randn(2, 4, 8, 8) for _ in views]
        value = torch.zeros_like(x)
        count = torch.zeros_like(x)
        for t, v in zip(rnd, views):
            for c in range(8):
                col = (v.left + c) % 22
                value[..., :, col] += t[..., :, c]
                count[..., :, col] += 1
        out = average_views(torch.stack(rnd), views, 8, 22)
        assert torch.allclose(out, value / count, atol=1e-6)


def _per_tile_fn(t):
    """Nonlinear, position-in-tile dependent, independent of the absolute position."""
    ramp = torch.linspace(-1, 1, t.shape[-1])
    return torch.tanh(t * 1.7 + ramp) + t.mean(dim=(-2, -1), keepdim=True) ** 2


def test_circular_multidiffusion_commutes_with_rolls_by_stride():
    x = torch.randn(1, 3, 6, 20)
    views = build_view_grid(6, 20, (6, 8), (6, 4), circular=True)

    def md(z):
        return average_views([_per_tile_fn(crop_view(z, v)) for v in views], views, 6, 20)

    base = md(x)
    for k in (1, 2, 3):
        rolled = md(torch.roll(x, shifts=4 * k, dims=-1))
        assert torch.allclose(rolled, torch.roll(base, shifts=4 * k, dims=-1), atol=1e-6)
    # a roll that is not a multiple of the stride does not commute (the test can fail)
    assert not torch.allclose(md(torch.roll(x, 1, -1)), torch.roll(base, 1, -1), atol=1e-3)


def test_anchor_index():
    views = build_view_grid(8, 24, 8, 4)
    assert len(views) == 5
    assert anchor_index(views) == 2 and anchor_index(views, "first") == 0 and anchor_index(views, "last") == 4
    assert anchor_index(views, 3) == 3
    for bad in (5, -1, "left", 1.5, True):
        with pytest.raises(ValueError):
            anchor_index(views, bad)


@pytest.mark.parametrize(
    "h,w,window,stride,circular,fragment",
    [
        (8, 24, 8, 0, False, "positive"),
        (8, 24, 8, 9, False, "larger than the window"),
        (8, 24, 16, 4, False, "larger than the latent height"),
        (8, 24, (8, 30), 4, True, "larger than the latent width"),
        (8, 24, 8, -2, True, "positive"),
        (8, 24, (8, 8, 8), 4, False, "pair"),
        (8, 24, 8.0, 4, False, "integer"),
    ],
)
def test_grid_errors(h, w, window, stride, circular, fragment):
    with pytest.raises(ValueError, match=fragment):
        build_view_grid(h, w, window, stride, circular=circular)


def test_crop_views_requires_equal_sizes():
    with pytest.raises(ValueError, match="equal size"):
        crop_views(torch.zeros(1, 8, 8), [View(0, 0, 4, 4), View(0, 0, 4, 5)])


def test_view_batches():
    assert view_batches(5, 2) == [[0, 1], [2, 3], [4]]
    assert view_batches(5, 2, skip=[2]) == [[0, 1], [3, 4]]
    assert view_batches(3, 10) == [[0, 1, 2]]
    with pytest.raises(ValueError):
        view_batches(3, 0)
