"""ODS geometry and warps: the spec's property set P1-P10 and P13 (ldm3d_stereo.md section 4.10).

Oracles are closed forms evaluated in float64 with `math`, and plain Python loops over rows/runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldm3d_core.distance import DepthMapping, depth_to_distance
from ldm3d_core.ods import ODSGeometry, equator_shift_px, ods_angles, ods_shift_px, pixel_beta, pole_weight
from ldm3d_core.ods_warp import EyeResult, backward_warp, fill_holes, forward_splat, render_eye, render_pair

NO_FADE = dict(pole_from_deg=90.0, pole_to_deg=90.0)
B = 0.032  # half of the default 64 mm IPD


def _scene(h=64, w=128, seed=0):
    """Random texture on a 5 m background with nearer blocks (0.6-2 m), some crossing the seam."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(h, w, 3, generator=g)
    r = torch.full((h, w), 5.0)
    for _ in range(6):
        y0 = int(torch.randint(0, h - 8, (1,), generator=g))
        x0 = int(torch.randint(0, w, (1,), generator=g))
        dist = 0.6 + 1.4 * float(torch.rand(1, generator=g))
        cols = [(x0 + i) % w for i in range(w // 8)]
        r[y0 : y0 + h // 4, cols] = dist
    return img, r


def test_p1_zero_ipd_is_identity():
    img, r = _scene()
    geom = ODSGeometry(ipd=0.0)
    for eye in ("left", "right"):
        for warp in ("forward", "backward"):
            res = render_eye(img, r, eye, geom, warp=warp)
            assert not res.hole.any()
            assert torch.equal(res.image, img) if warp == "forward" else torch.allclose(res.image, img, atol=1e-6)


def test_p2_constant_sphere_rotates_each_row_by_asin():
    h, w = 128, 256
    radius = B / math.sin(5 * 2 * math.pi / w)  # equator shift exactly 5 px
    img = torch.rand(h, w, 3, generator=torch.Generator().manual_seed(1))
    r = torch.full((h, w), radius)
    geom = ODSGeometry(horizontal_only=True, **NO_FADE)
    differs_from_atan = 0
    for eye, s in (("left", -1), ("right", 1)):
        res = render_eye(img, r, eye, geom, dtype=torch.float64)
        for y in range(h):
            beta = (0.5 - (y + 0.5) / h) * math.pi
            ratio = B / (radius * math.cos(beta))
            if ratio >= 1:  # the whole row is inside the viewing circle: invisible, reported as holes
                assert res.hole[y].all()
                continue
            shift = round(math.asin(ratio) * w / (2 * math.pi))
            differs_from_atan += shift != round(math.atan(ratio) * w / (2 * math.pi))
            assert torch.equal(res.image[y], torch.roll(img[y], -s * shift, 0)), (eye, y)
            assert not res.hole[y].any()
    assert differs_from_atan > 0  # the oracle would catch an atan (constant-shift) implementation


@pytest.mark.parametrize("k", [1, 37, 64, 127])
@pytest.mark.parametrize("horizontal_only", [True, False])
def test_p3_yaw_seam_equivariance(k, horizontal_only):
    img, r = _scene(seed=2)
    geom = ODSGeometry(horizontal_only=horizontal_only)
    base = render_pair(img, r, geom)
    rolled = render_pair(torch.roll(img, k, 1), torch.roll(r, k, 1), geom)
    for a, b in zip(base, rolled):
        assert torch.equal(torch.roll(a.image, k, 1), b.image)
        assert torch.equal(torch.roll(a.hole, k, 1), b.hole)
        assert torch.equal(torch.roll(a.r, k, 1), b.r)


@pytest.mark.parametrize("fill", ["background", "stretch", "none"])
def test_p4_mirror_symmetry(fill):
    img, r = _scene(seed=3)
    geom = ODSGeometry()
    left = render_eye(img, r, "left", geom, fill=fill)
    right_of_flip = render_eye(torch.flip(img, [1]), torch.flip(r, [1]), "right", geom, fill=fill)
    assert torch.equal(left.image, torch.flip(right_of_flip.image, [1]))
    assert torch.equal(left.hole, torch.flip(right_of_flip.hole, [1]))


def test_p5_convergence_distance_has_zero_disparity():
    c = 2.5
    geom = ODSGeometry(convergence=c)
    r = torch.full((64, 128), c)
    for eye in ("left", "right"):
        dx, _, _ = ods_shift_px(r, eye, geom, torch.float64)
        assert dx.abs().max() < 1e-6
    near = ods_shift_px(torch.full((64, 128), 1.0), "left", geom, torch.float64)[0]
    far = ods_shift_px(torch.full((64, 128), 10.0), "left", geom, torch.float64)[0]
    rows = pole_weight(pixel_beta(64, dtype=torch.float64)) > 0
    assert (near[rows] > 0).all() and (far[rows] < 0).all()  # nearer pops out, farther recedes
    img = torch.rand(64, 128, 3)
    res = render_eye(img, r, "left", ODSGeometry(convergence=c, horizontal_only=True))
    assert torch.equal(res.image, img)


def test_p6_sign_and_spec_number():
    h, w = 256, 512
    r = torch.full((h, w), 1.0)
    geom = ODSGeometry(**NO_FADE)
    dl = ods_shift_px(r, "left", geom, torch.float64)[0]
    dr = ods_shift_px(r, "right", geom, torch.float64)[0]
    assert (dl > 0).all() and (dr < 0).all()
    assert torch.equal(dl, -dr)
    # equator rows sit at +-0.35 deg; spec: +2.608 px at r = 1 m, W = 512
    beta = (0.5 - (h // 2 + 0.5) / h) * math.pi
    expect = math.asin(B / math.cos(beta)) * w / (2 * math.pi)
    assert abs(float(dl[h // 2, 0]) - expect) < 1e-9
    assert abs(expect - 2.608) < 2e-3
    assert abs(equator_shift_px(1.0, 0.064, 512) - 2.608) < 1e-3


def test_p7_monotonicity():
    geom = ODSGeometry(**NO_FADE)
    dist = torch.linspace(0.2, 50.0, 400)[None].expand(8, -1)  # rows near the equator of a 8-row map
    delta, _, vis = ods_angles(dist, "left", geom)
    assert vis.all()
    assert (delta[:, 1:] < delta[:, :-1]).all()
    d = torch.linspace(0.0, 1.0, 300)[None].expand(8, -1)
    delta_d, _, _ = ods_angles(depth_to_distance(d, DepthMapping("inverse", 1.0, 20.0)), "left", geom)
    assert (delta_d[:, 1:] > delta_d[:, :-1]).all()


def test_p8_poles_untouched_and_finite():
    h, w = 128, 256
    g = torch.Generator().manual_seed(4)
    img = torch.rand(h, w, 3, generator=g)
    r = 0.3 + 3.0 * torch.rand(h, w, generator=g)
    geom = ODSGeometry()
    beta = pixel_beta(h, dtype=torch.float64)
    pole_rows = beta.abs() >= math.radians(75.0)
    assert pole_rows.sum() == 22  # 11 rows per pole at H = 128
    for eye in ("left", "right"):
        res = render_eye(img, r, eye, geom)
        assert torch.equal(res.image[pole_rows], img[pole_rows])
        assert not res.hole[pole_rows].any()
        assert torch.isfinite(res.image).all() and torch.isfinite(res.r).all()
    delta, phi, _ = ods_angles(torch.cat([r, torch.full((1, w), math.inf), torch.zeros(1, w)]), "left", geom)
    assert torch.isfinite(delta).all() and torch.isfinite(phi).all()
    assert delta.abs().max() <= math.pi / 2


def test_p9_occlusion_holes_on_the_correct_side():
    h, w = 256, 512
    r = torch.full((h, w), 5.0)
    r[:, 200:260] = 0.5
    img = torch.rand(h, w, 3)
    geom = ODSGeometry(horizontal_only=True, **NO_FADE)
    left = forward_splat(img, r, "left", geom)
    right = forward_splat(img, r, "right", geom)
    for y in (h // 2, h // 2 + 10):
        assert torch.nonzero(left.hole[y]).flatten().tolist() == [201, 202, 203, 204]
        assert torch.nonzero(right.hole[y]).flatten().tolist() == [255, 256, 257, 258]
    # the same block across the seam: holes wrap to the other side of column 0
    rs = torch.roll(r, -230, 1)  # block now covers columns 482..511 and 0..29
    ls = forward_splat(torch.roll(img, -230, 1), rs, "left", geom)
    assert torch.nonzero(ls.hole[h // 2]).flatten().tolist() == [483, 484, 485, 486]


def _runs_oracle(hole_row):
    """Plain loop: list of (start, length) hole runs of a cyclic row."""
    w = len(hole_row)
    if all(hole_row):
        return []
    start = next(i for i in range(w) if not hole_row[i])  # a known pixel: runs never straddle it
    runs, x = [], 0
    while x < w:
        i = (start + x) % w
        if hole_row[i]:
            n = 0
            while hole_row[(i + n) % w]:
                n += 1
            runs.append((i, n))
            x += n
        else:
            x += 1
    return runs


@pytest.mark.parametrize("eye", ["left", "right"])
def test_p10_background_fill_takes_the_farther_neighbour(eye):
    img, r = _scene(h=32, w=96, seed=5)
    geom = ODSGeometry(ipd=0.2)  # large baseline: many wide holes
    raw = forward_splat(img, r, eye, geom)
    filled = fill_holes(raw, eye, "background", crack_px=0)
    w = r.shape[1]
    checked = 0
    for y in range(r.shape[0]):
        for start, n in _runs_oracle(raw.hole[y].tolist()):
            li, ri = (start - 1) % w, (start + n) % w
            rl, rr = float(raw.r[y, li]), float(raw.r[y, ri])
            src = li if (rl > rr or (rl == rr and eye == "left")) else ri
            for k in range(n):
                x = (start + k) % w
                assert torch.equal(filled.image[y, x], raw.image[y, src])
                assert float(filled.r[y, x]) == float(raw.r[y, src])
                checked += 1
    assert checked > 50
    assert torch.equal(filled.hole, raw.hole)  # crack_px=0: every run is a disocclusion


def test_cracks_are_interpolated_and_not_reported():
    w = 16
    img = torch.zeros(1, w, 1)
    r = torch.full((1, w), 2.0)
    hole = torch.zeros(1, w, dtype=torch.bool)
    img[0, :, 0] = torch.arange(w, dtype=torch.float32)
    # crack of width 2 at 4..5 between similar depths; disocclusion of width 2 at 10..11 between 2 m and 4 m
    hole[0, [4, 5, 10, 11]] = True
    r[0, 12:] = 4.0
    img[0, [4, 5, 10, 11], 0] = 0
    res = fill_holes(EyeResult(img, r, hole), "left", "background", crack_px=2, tau=0.05)
    assert torch.allclose(res.image[0, 4:6, 0], torch.tensor([3 + 3 / 3, 3 + 2 * 3 / 3]))
    assert res.hole[0].tolist() == [x in (10, 11) for x in range(w)]
    assert res.image[0, 10, 0] == 12 and res.image[0, 11, 0] == 12  # the farther (4 m) neighbour
    stretched = fill_holes(EyeResult(img, r, hole), "left", "stretch", crack_px=2, tau=0.05)
    assert torch.allclose(stretched.image[0, 10:12, 0], torch.tensor([9 + 1.0, 9 + 2.0]))
    # a crack across the seam (columns 15 and 0) interpolates between 14 and 1
    hole2 = torch.zeros(1, w, dtype=torch.bool)
    hole2[0, [15, 0]] = True
    res2 = fill_holes(EyeResult(img, torch.full((1, w), 2.0), hole2), "left", "background", crack_px=2)
    assert torch.allclose(res2.image[0, [15, 0], 0], torch.tensor([14 + (1 - 14) / 3, 14 + 2 * (1 - 14) / 3]))
    assert not res2.hole.any()


def test_p13_output_seam_continuity():
    h, w = 64, 256
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    a = (xx + 0.5) / w * 2 * math.pi
    img = torch.stack([0.5 + 0.4 * torch.sin(a + c) * torch.cos(yy / h * 3) for c in (0, 2, 4)], -1)
    d = 0.5 + 0.4 * torch.sin(2 * a) * torch.sin(yy / h * math.pi)
    r = depth_to_distance(d, DepthMapping("inverse", 0.5, 10.0))
    for eye in ("left", "right"):
        out = render_eye(img, r, eye, ODSGeometry()).image
        seam = (out[:, 0] - out[:, -1]).abs().mean()
        inner = (out[:, 1:] - out[:, :-1]).abs().mean(dim=(0, 2)).median()
        assert seam <= 1.5 * inner


def test_backward_warp_matches_subpixel_rotation_and_forward_on_smooth_scene():
    h, w = 16, 128
    radius = 0.7
    x = torch.arange(w, dtype=torch.float64)
    row = torch.sin(2 * math.pi * x / w) + 0.3 * torch.cos(6 * math.pi * x / w)
    img = row[None, :, None].expand(h, w, 1).clone()
    res = backward_warp(
        img, torch.full((h, w), radius), "left", ODSGeometry(horizontal_only=True, **NO_FADE), dtype=torch.float64
    )
    for y in range(h):
        beta = (0.5 - (y + 0.5) / h) * math.pi
        shift = math.asin(B / (radius * math.cos(beta))) * w / (2 * math.pi)
        xs = (np.arange(w) - shift) % w  # oracle: periodic linear interpolation at x - shift
        expect = np.interp(xs, np.arange(w + 1), np.append(row.numpy(), row[0].item()))
        assert np.allclose(res.image[y, :, 0].numpy(), expect, atol=1e-9)
    assert not res.hole.any()


def test_supersample_two_keeps_shapes_and_identity():
    img, r = _scene(h=32, w=64, seed=6)
    res = render_eye(img, r, "left", ODSGeometry(ipd=0.0), supersample=2)
    assert torch.allclose(res.image, img, atol=1e-6) and not res.hole.any()
    res = render_eye(img, r, "right", ODSGeometry(), supersample=2)
    assert res.image.shape == img.shape and res.hole.shape == r.shape and torch.isfinite(res.image).all()
    assert res.hole.any()


def test_inputs_unchanged_and_errors():
    img, r = _scene(h=16, w=32)
    img0, r0 = img.clone(), r.clone()
    render_pair(img, r, ODSGeometry(), supersample=2)
    render_pair(img, r, ODSGeometry(), warp="backward")
    assert torch.equal(img, img0) and torch.equal(r, r0)
    with pytest.raises(ValueError, match="ipd"):
        ODSGeometry(ipd=-0.01)
    with pytest.raises(ValueError, match="pole_to_deg"):
        ODSGeometry(pole_from_deg=70, pole_to_deg=60)
    with pytest.raises(ValueError, match="same size"):
        render_eye(img, r[:, :-1], "left", ODSGeometry())
    with pytest.raises(ValueError, match="r must be"):
        render_eye(img, torch.full_like(r, float("nan")), "left", ODSGeometry())
    with pytest.raises(ValueError, match="eye"):
        render_eye(img, r, "centre", ODSGeometry())
    with pytest.raises(ValueError, match="fill"):
        render_eye(img, r, "left", ODSGeometry(), fill="blur")


def test_pole_weight_matches_blender_formula():
    beta = torch.tensor([0.0, 59.9, 60.0, 67.5, 75.0, 80.0, -67.5], dtype=torch.float64) * math.pi / 180
    w = pole_weight(beta, 60.0, 75.0)
    expect = [1, 1, 1, math.cos(math.pi / 4), 0, 0, math.cos(math.pi / 4)]
    assert np.allclose(w.numpy(), expect, atol=1e-12)


@pytest.mark.parametrize("convergence", [math.inf, 3.0])
def test_disparity_px_matches_closed_form(convergence):
    from ldm3d_core.ods import disparity_px

    h, w = 12, 24
    g = torch.Generator().manual_seed(3)
    r = 0.2 + 9.8 * torch.rand(h, w, generator=g, dtype=torch.float64)
    r[0, 0], r[5, 7] = math.inf, 0.01  # at infinity; inside the viewing circle
    geom = ODSGeometry(ipd=2 * B, convergence=convergence, **NO_FADE)
    out = disparity_px(r, geom)
    assert out.shape == (h, w) and out.dtype == torch.float64
    for y in range(h):
        beta = (0.5 - (y + 0.5) / h) * math.pi
        conv = 0.0 if math.isinf(convergence) else math.asin(min(B / (convergence * math.cos(beta)), 1.0))
        for x in range(w):
            rho = float(r[y, x]) * math.cos(beta)
            delta = math.asin(min(B / rho, 1.0)) - conv  # left shift minus right shift = 2 * delta * W / (2 pi)
            assert float(out[y, x]) == pytest.approx(2 * delta * w / (2 * math.pi), rel=1e-9, abs=1e-9), (y, x)


def test_disparity_preview_scales_to_grey_range():
    from ldm3d_core.ods import disparity_preview, disparity_px

    r = torch.linspace(0.5, 20.0, 32)[None].expand(16, -1).contiguous()
    geom = ODSGeometry()
    prev = disparity_preview(r, geom)
    disp = disparity_px(r, geom, torch.float32)
    assert prev.dtype == torch.float32 and prev.shape == r.shape
    assert float(prev.max()) == pytest.approx(1.0) and float(prev.min()) >= 0.5  # parallel eyes: d >= 0
    assert torch.allclose(prev, 0.5 + 0.5 * disp / disp.abs().max())
    flat = disparity_preview(r, ODSGeometry(ipd=0.0))
    assert torch.equal(flat, torch.full_like(flat, 0.5))
