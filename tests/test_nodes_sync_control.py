"""ControlNet and area conditioning through the SyncDiffusion tiler (tiny random ControlNet with ComfyUI's own
architecture, loaded by the stock ControlNetLoader)."""

from __future__ import annotations

import torch
from model_fixtures import empty_latent, stock_ksampler, sync_ksampler

from comfy_harness import run_node, stock_node


def test_each_view_gets_its_crop_of_the_canvas_hint_not_the_whole_hint_squashed(pack, controlled, hint, sd):
    tiling = pack.nodes.sync.view_tiler
    import sys

    core_views = sys.modules["syncdiffusion_ldm3d.sync_core.views"]
    views = core_views.build_view_grid(8, 24, 8, 4, circular=True)
    tiler = tiling.ViewTiler(sd["model"].model, views, (8, 24))
    control = controlled[0][0][1]["control"]
    original_hint = control.cond_hint_original.clone()
    canvas = hint.movedim(-1, 1)  # the hint is exactly canvas-sized (64x192 px): no resize
    for index, view in enumerate(views):
        copy = tiler._control_for_view(control, index)
        cols = [(c % 24) for c in range(view.left, view.left + view.width)]
        expected = torch.cat([canvas[..., c * 8 : (c + 1) * 8] for c in cols], dim=-1)
        assert copy is not control and copy.cond_hint_original.shape == (1, 3, 64, 64)
        assert torch.allclose(copy.cond_hint_original, expected), f"view {index}"
        assert tiler._control_for_view(control, index) is copy  # cached per view
    assert torch.equal(control.cond_hint_original, original_hint)
    tiler.cleanup()


def test_controlnet_single_full_view_equals_stock_and_synced_panorama_runs(pack, sd, controlled, lpips_alex):
    positive, negative = controlled
    square = empty_latent(8, 8)
    ours = sync_ksampler(pack, {**sd, "positive": positive, "negative": negative}, square, window=64, stride=64)
    stock = run_node(
        stock_node("KSampler"),
        model=sd["model"],
        positive=positive,
        negative=negative,
        latent_image=square,
        seed=3,
        steps=3,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )[0]["samples"]
    without = stock_ksampler(sd, square)
    assert torch.allclose(ours, stock, atol=1e-6) and not torch.allclose(stock, without, atol=1e-3)
    wide = sync_ksampler(
        pack,
        {**sd, "positive": positive, "negative": negative},
        empty_latent(8, 24),
        sync_weight=200.0,
        sync_steps=2,
        lpips=lpips_alex,
    )
    assert wide.shape == (1, 4, 8, 24) and torch.isfinite(wide).all()


def test_area_conditioning_is_intersected_with_each_view(pack, sd):
    import sys

    core_views = sys.modules["syncdiffusion_ldm3d.sync_core.views"]
    views = core_views.build_view_grid(8, 24, 8, 4, circular=True)
    tiler = pack.nodes.sync.view_tiler.ViewTiler(sd["model"].model, views, (8, 24))
    area = (8, 6, 0, 10)  # h, w, y, x in latent units: columns [10, 16)
    for view in views:
        got = tiler._area_in_view(area, view)
        inside = [c for c in range(view.left, view.left + view.width) if 10 <= c % 24 < 16]
        if not inside:
            assert got is None
        else:
            first = [c for c in range(view.left, view.left + view.width)].index(inside[0])
            assert got == (8, len(inside), 0, first), view
    (boxed,) = run_node(
        stock_node("ConditioningSetArea"), conditioning=sd["positive"], width=48, height=64, x=80, y=0, strength=1.0
    )
    (combined,) = run_node(stock_node("ConditioningCombine"), conditioning_1=sd["positive"], conditioning_2=boxed)
    out = sync_ksampler(pack, {**sd, "positive": combined}, empty_latent(8, 24), view_batch_size=4)
    plain = sync_ksampler(pack, sd, empty_latent(8, 24))
    assert torch.isfinite(out).all() and not torch.allclose(out, plain, atol=1e-4)
