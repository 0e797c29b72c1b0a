"""ldm3d_core.ods_fill: one background layer fills the disocclusions of both eyes (no ComfyUI).

Oracles: the plain forward splat of ods_warp (the eyes before filling, and the layer re-splatted into each eye)."""

from __future__ import annotations

import torch

from ldm3d_core import ods_fill, ods_warp
from ldm3d_core.ods import ODSGeometry

GEOM = ODSGeometry(ipd=0.3)


def scene(h=32, w=128):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(h, w, 3, generator=g)
    r = torch.full((h, w), 8.0)
    r[8:24, 30:50] = 0.8  # near blocks, one across the seam
    r[10:20, 120:] = 1.0
    r[10:20, :6] = 1.0
    return image, r


def test_layer_fills_every_hole_changes_nothing_else_and_both_eyes_share_it():
    image, r = scene()
    mask = ods_fill.source_hole_mask(r, GEOM, grow_px=2)
    assert mask.any() and mask.float().mean() < 0.3
    inpainted = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))  # stands in for the model
    layer_image, layer_r = ods_fill.background_layer(image, r, inpainted, mask)
    assert torch.equal(layer_image[~mask], image[~mask]) and torch.equal(layer_r[~mask], r[~mask])
    assert (layer_r[mask] >= r[mask]).all(), "the layer is background"
    holes = 0
    for eye in ("left", "right"):
        plain = ods_warp.render_eye(image, r, eye, GEOM, fill="background")
        assert plain.hole.any()
        holes += int(plain.hole.sum())
        filled = ods_fill.fill_from_layer(plain, layer_image, layer_r, eye, GEOM)
        assert not filled.hole.any(), "no hole pixel is left"
        assert torch.equal(filled.image[~plain.hole], plain.image[~plain.hole]), "nothing outside the holes changes"
        resplat = ods_warp.fill_holes(ods_warp.forward_splat(layer_image, layer_r, eye, GEOM), eye, "background")
        assert torch.equal(filled.image[plain.hole], resplat.image[plain.hole]), "holes show the re-splatted layer"
        # the layer's own (inpainted) pixels are what the holes show, not the background fill of the plain warp
        from_mask = ods_warp.forward_splat(torch.where(mask[..., None], 1.0, 0.0), layer_r, eye, GEOM).image[..., 0]
        assert from_mask[plain.hole].mean() > 0.9
    assert holes > 20


def test_the_same_layer_pixel_has_the_same_colour_in_both_eyes():
    """A thin near pole: both eyes see the background it hides in the source view, from the one layer."""
    image, r = scene()
    r[4:28, 80:84] = 0.8  # 4 px: wider than a crack
    mask = ods_fill.source_hole_mask(r, GEOM, grow_px=2)
    layer_image, layer_r = ods_fill.background_layer(image, r, torch.zeros_like(image), mask)
    ids = torch.arange(r.numel(), dtype=torch.float32).reshape(*r.shape, 1)  # a source-pixel id per layer pixel
    seen = {}
    for eye in ("left", "right"):
        plain = ods_warp.render_eye(image, r, eye, GEOM, fill="background")
        filled = ods_fill.fill_from_layer(plain, layer_image, layer_r, eye, GEOM)
        which = ods_warp.forward_splat(ids, layer_r, eye, GEOM)
        ok = plain.hole & ~which.hole
        seen[eye] = {int(i): filled.image[y, x] for (y, x), i in zip(ok.nonzero().tolist(), which.image[ok][:, 0])}
    common = set(seen["left"]) & set(seen["right"])
    assert common, "some layer pixels fill holes of both eyes"
    assert all(torch.equal(seen["left"][i], seen["right"][i]) for i in common)


def test_background_distance_takes_the_far_neighbour_and_wraps():
    r = torch.tensor([[5.0, 1.0, 1.0, 2.0, 3.0, 7.0]])
    mask = torch.tensor([[False, True, True, False, False, True]])
    got = ods_fill.background_distance(r, mask)
    assert got.tolist() == [[5.0, 5.0, 5.0, 2.0, 3.0, 5.0]]  # column 5 wraps: neighbours 3 (col 4) and 5 (col 0)
