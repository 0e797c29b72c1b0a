"""sync_core.batching (view batch plans) and sync_views driven by a planner, incl. the out-of-memory retry."""

from __future__ import annotations

import pytest
import torch

from sync_core import batching
from sync_core.sync import sync_views

GIB = 1024**3


@pytest.mark.parametrize(
    "budget,per_view,fixed,cap,expected",
    [
        (10 * GIB, 2 * GIB, 0, None, 5),
        (10 * GIB, 2 * GIB, 3 * GIB, None, 3),
        (10 * GIB, 2 * GIB, 0, 4, 4),
        (1 * GIB, 2 * GIB, 0, None, 1),  # nothing fits: one view at a time
        (100 * GIB, 1, 0, None, 13),  # never more than the views
    ],
)
def test_views_that_fit(budget, per_view, fixed, cap, expected):
    assert batching.views_that_fit(budget, per_view, 13, fixed, cap) == expected


@pytest.mark.parametrize(
    "views,room,sizes",
    [(13, 6, [5, 5, 3]), (13, 4, [4, 4, 4, 1]), (13, 13, [13]), (12, 5, [4, 4, 4]), (1, 8, [1]), (7, 1, [1] * 7)],
)
def test_batches_are_balanced_and_cover_every_view(views, room, sizes):
    assert batching.batch_sizes(views, room) == sizes
    assert max(sizes) <= room and sum(sizes) == views
    assert len(sizes) == -(-views // room)  # no more calls than the largest batch would need


def test_planner_replans_from_a_measurement_and_halves_after_out_of_memory():
    planner = batching.GradientBatchPlanner(budget_bytes=8 * GIB, per_view_bytes=1 * GIB)
    assert planner(12) == 6  # 8 fit -> 12 views in two balanced calls of 6
    planner.observe(6, 6 * 2 * GIB)  # really 2 GiB a view, +10% safety
    assert planner.per_view_bytes == pytest.approx(2.2 * GIB)
    assert planner(12) == 3  # 3 fit (6.6 GiB): 12 in four calls of 3
    planner.shrink(3)
    assert planner(12) == 1
    fixed = batching.GradientBatchPlanner(budget_bytes=1, per_view_bytes=GIB, override=5)
    assert fixed(12) == 5 and fixed(3) == 3


def _toy_problem(n_views=7, batch=2):
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 3, 3) * 0.3

    def predict_x0(z, ids):
        return torch.tanh(z * 1.3) - 0.1 * z**2

    def decode(x0):
        return torch.sigmoid(torch.nn.functional.conv2d(x0, weight, padding=1))

    def perceptual(a, b):
        return ((a - b) ** 2).mean(dim=(1, 2, 3)) + (a.mean(dim=(1, 2, 3)) - b.mean(dim=(1, 2, 3))).abs()

    latents = torch.randn(n_views, batch, 4, 6, 6)
    return latents, predict_x0, decode, perceptual


def test_sync_views_gives_the_same_update_for_any_plan():
    latents, predict_x0, decode, perceptual = _toy_problem()
    one = sync_views(latents, 3, predict_x0, decode, perceptual, weight=5.0, view_batch_size=1)
    all_at_once = sync_views(latents, 3, predict_x0, decode, perceptual, weight=5.0, view_batch_size=7)
    asked = []
    planned = sync_views(
        latents,
        3,
        predict_x0,
        decode,
        perceptual,
        weight=5.0,
        view_batch_size=lambda remaining: asked.append(remaining) or 4,
    )
    assert asked == [6, 2]  # asked before each batch with the views still to do
    assert not torch.allclose(one, latents, atol=1e-3), "the update must move the views"
    assert torch.allclose(one, all_at_once, atol=1e-6) and torch.allclose(one, planned, atol=1e-6)


def test_a_batch_that_runs_out_of_memory_is_retried_at_half_size():
    latents, predict_x0, decode, perceptual = _toy_problem()
    seen = []

    def fragile_predict(z, ids):
        seen.append(len(ids))
        if len(ids) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return predict_x0(z, ids)

    planner = batching.GradientBatchPlanner(budget_bytes=100 * GIB, per_view_bytes=1)
    out = sync_views(latents, 3, fragile_predict, decode, perceptual, weight=5.0, view_batch_size=planner)
    expected = sync_views(latents, 3, predict_x0, decode, perceptual, weight=5.0, view_batch_size=1)
    assert seen[:4] == [1, 6, 3, 1] and torch.allclose(out, expected, atol=1e-6)  # the anchor's x0 first
    assert planner.cap == 1  # told: the 3-view batch failed

    def always_fails(z, ids):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.OutOfMemoryError):
        sync_views(latents, 3, always_fails, decode, perceptual, weight=5.0, view_batch_size=2)
