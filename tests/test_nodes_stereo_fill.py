"""Stereo 360 Hole Mask and Stereo 360 (Filled Holes) in real ComfyUI. Oracle: the Stereo 360 node's plain forward
warp (fill background) with the same geometry: outside its hole masks the filled eyes must equal it."""

from __future__ import annotations

import pytest
import torch

from comfy_harness import run_node

GEOMETRY = dict(ipd_m=0.2, depth_mode="inverse", near_m=1.0, far_m=20.0, invert_depth=False, metric_scale_m=10.0)
GEOMETRY.update(sphere_radius_m=6.0, displacement_m=4.0)


def scene():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 64, 128, 3, generator=g)
    depth = torch.full((1, 64, 128), 0.02)
    depth[:, 16:48, 40:60] = 0.9  # a near block
    depth[:, 20:40, 120:] = 0.8  # one across the seam
    depth[:, 20:40, :6] = 0.8
    return image, depth


def test_filled_holes_leave_no_hole_and_change_only_hole_pixels(pack):
    image, depth = scene()
    before = (image.clone(), depth.clone())
    (mask,) = run_node(pack.by_id["SDL3D_Stereo360HoleMask"], image=image, depth=depth, grow_px=4, **GEOMETRY)
    assert mask.shape == (1, 64, 128) and 0 < mask.mean() < 0.3
    background = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))  # stands in for inpainting
    stereo, left, right, filled = run_node(
        pack.by_id["SDL3D_Stereo360FilledHoles"],
        image=image,
        depth=depth,
        background=background,
        mask=mask,
        layout="top_bottom",
        **GEOMETRY,
    )
    plain = run_node(
        pack.by_id["SDL3D_Stereo360"],
        image=image,
        depth=depth,
        convergence_m=0.0,
        pole_fade_from_deg=60.0,
        pole_fade_to_deg=75.0,
        horizontal_only=False,
        warp="forward",
        fill="background",
        crack_px=2,
        edge_ratio_tau=0.05,
        supersample=1,
        layout="top_bottom",
        swap_eyes=False,
        **GEOMETRY,
    )
    for eye, plain_eye, hole in ((left, plain[1], plain[3]), (right, plain[2], plain[4])):
        outside = hole[0] < 0.5
        assert hole.sum() > 10
        assert torch.equal(eye[0][outside], plain_eye[0][outside]), "nothing outside the holes changes"
        assert not torch.equal(eye[0][~outside], plain_eye[0][~outside]), "the holes show the layer"
    assert torch.equal(filled, torch.cat([plain[3], plain[4]], dim=1)), "every hole pixel was filled"
    assert torch.equal(stereo, torch.cat([left, right], dim=1))
    assert torch.equal(image, before[0]) and torch.equal(depth, before[1]), "inputs unchanged"


def test_filled_holes_refuse_a_background_of_another_size(pack):
    image, depth = scene()
    with pytest.raises(ValueError, match="Stereo 360 \\(Filled Holes\\): input 'background'.*Fix:"):
        run_node(
            pack.by_id["SDL3D_Stereo360FilledHoles"],
            image=image,
            depth=depth,
            background=image[:, :32],
            mask=torch.zeros(1, 64, 128),
            layout="top_bottom",
            **GEOMETRY,
        )
