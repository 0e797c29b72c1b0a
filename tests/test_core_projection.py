"""Projections and sphere layouts against closed-form geometry (ldm3d_core.projection, ldm3d_core.sphere_views).

Oracles: directions and pixel positions computed by hand from the documented conventions, and a smooth analytic
function of the direction, evaluated exactly where each view or canvas pixel looks (so a resampled image can be
compared with the function itself, not with the code's own output).
"""

from __future__ import annotations

import math

import pytest
import torch

from ldm3d_core.projection import (
    CUBE_FACES,
    View,
    coverage,
    cube_face_views,
    distance_to_zdepth,
    equirect_directions,
    equirect_pixel,
    equirect_to_perspective,
    rotate_equirect,
    sample_equirect,
    view_directions,
    view_pixel,
    zdepth_to_distance,
)
from ldm3d_core.sphere_canvas import (
    SphereCanvas,
    align_depth,
    cubemap_to_equirect,
    equirect_to_cubemap,
    perspective_to_equirect,
)
from ldm3d_core.sphere_views import covers, cube_layout, ring_layout


def field(d: torch.Tensor) -> torch.Tensor:
    """A smooth function on the sphere (continuous across the 0/360 seam and the poles): [..., 3] -> [...]."""
    d = d / d.norm(dim=-1, keepdim=True)
    return 0.5 + 0.3 * d[..., 0] - 0.4 * d[..., 1] ** 2 + 0.2 * d[..., 2] * d[..., 1] + 0.1 * d[..., 0] * d[..., 2]


def unit(*v):
    t = torch.tensor(v, dtype=torch.float64)
    return t / t.norm()


def test_equirect_pixels_of_closed_form_directions():
    h, w = 64, 128
    cases = {
        (0, 0, 1): (w / 2 - 0.5, h / 2 - 0.5),  # straight ahead: the image centre
        (1, 0, 0): (0.75 * w - 0.5, h / 2 - 0.5),  # right: three quarters across
        (-1, 0, 0): (0.25 * w - 0.5, h / 2 - 0.5),
        (0, 1, 0): (None, -0.5),  # zenith: the top edge, any column
        (0, -1, 0): (None, h - 0.5),
        (1, 1, 0): (0.75 * w - 0.5, 0.25 * h - 0.5),  # 45 degrees up
    }
    for direction, (x, y) in cases.items():
        px = equirect_pixel(unit(*direction), h, w)
        if x is not None:
            assert px[0].item() == pytest.approx(x, abs=1e-9), direction
        assert px[1].item() == pytest.approx(y, abs=1e-9), direction
    d = equirect_directions(h, w)
    assert torch.allclose(d.norm(dim=-1), torch.ones(h, w, dtype=torch.float64))
    xs, ys = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    assert torch.allclose(equirect_pixel(d, h, w), torch.stack((ys, xs), dim=-1), atol=1e-9)


def test_view_directions_yaw_pitch_roll_and_cube_corners():
    def centre(view):
        return view_directions(view)[2, 2] / view_directions(view)[2, 2].norm()

    assert torch.allclose(centre(View(90, 0, 60, (5, 5))), unit(1, 0, 0), atol=1e-12)  # yaw + = right
    assert torch.allclose(centre(View(0, 90, 60, (5, 5))), unit(0, 1, 0), atol=1e-12)  # pitch + = up
    a, b = math.radians(30), math.radians(40)
    expected = unit(math.cos(b) * math.sin(a), math.sin(b), math.cos(b) * math.cos(a))
    assert torch.allclose(centre(View(30, 40, 60, (5, 5))), expected, atol=1e-12)
    # Roll + 90: the camera's right now points down, so the pixel right of the centre looks below the horizon.
    right = view_directions(View(0, 0, 90, (5, 5), roll=90))[2, 4]
    assert right[1] < 0 and abs(right[0]) < 1e-12
    # A 90-degree face of 2x2 pixels: the top-right pixel centre is (0.5, 0.5, 1) in camera coordinates.
    assert torch.allclose(
        view_directions(View(0, 0, 90, (2, 2)))[0, 1], torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    )
    up_face = cube_face_views(2)[CUBE_FACES.index("up")]
    assert torch.allclose(view_directions(up_face).mean(dim=(0, 1)), torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    # view_pixel inverts view_directions, and flags directions behind the camera.
    view = View(-60, 25, 80, (6, 10), roll=15)
    pixels, inside = view_pixel(view_directions(view), view)
    rows, cols = torch.meshgrid(torch.arange(6.0), torch.arange(10.0), indexing="ij")
    assert inside.all() and torch.allclose(pixels, torch.stack((cols, rows), -1).double(), atol=1e-9)
    assert not view_pixel(-view_directions(view), view)[1].any()


@pytest.mark.parametrize("view", [View(0, 0, 72, (32, 32)), View(150, -30, 72, (24, 40)), View(0, 90, 72, (32, 32)),
                                  View(-179, -90, 90, (32, 32), roll=30), View(180, 10, 100, (32, 32))])  # fmt: skip
def test_equirect_to_perspective_samples_the_function_where_the_view_looks(view):
    h, w = 128, 256
    equirect = field(equirect_directions(h, w))[None, None].float()
    out = equirect_to_perspective(equirect, view)
    truth = field(view_directions(view)).float()
    assert out.shape == (1, 1, *view.size)
    assert (out[0, 0] - truth).abs().max() < 2e-3, (out[0, 0] - truth).abs().max()


def test_poles_and_seam_are_continuous():
    """A view straight up, centred on the zenith, is symmetric for a field that only depends on the elevation;
    without the across-the-pole row it would not be."""
    h, w = 32, 64
    elevation_only = equirect_directions(h, w)[..., 1][None, None].float()
    up = equirect_to_perspective(elevation_only, View(0, 90, 60, (16, 16)))[0, 0]
    assert torch.allclose(up, up.flip(0), atol=1e-5) and torch.allclose(up, up.flip(1), atol=1e-5)
    assert torch.allclose(up, up.T, atol=1e-5)
    # Across the pole: on a coarse grid (top row at 78.75 deg) a direction 1 deg from the zenith must blend the top
    # row with the row half a turn away; clamping to the top row would read 0.19 where the field is 0.017.
    coarse = equirect_directions(16, 32)[..., 0][None, None].float()  # the field d_x
    c, s = math.cos(math.radians(89)), math.sin(math.radians(89))
    near_zenith = torch.stack([unit(c * math.sin(a), s, c * math.cos(a)) for a in (math.pi / 2, -math.pi / 2)])
    sampled = sample_equirect(coarse, near_zenith[None])[0, 0, 0]
    assert (sampled - near_zenith[:, 0].float()).abs().max() < 0.03, sampled
    # The 0/360 seam: a view centred on it equals the same view of the image rolled by half a turn, turned back.
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    seam = equirect_to_perspective(image, View(180, 0, 60, (16, 16)))
    rolled = equirect_to_perspective(image.roll(w // 2, dims=-1), View(0, 0, 60, (16, 16)))
    assert torch.allclose(seam, rolled, atol=1e-5)


@pytest.mark.parametrize("layout", ["rings", "cube"])
def test_fusing_exact_views_gives_the_function_on_the_whole_canvas(layout):
    size = (48, 48)
    cameras = ring_layout(size, 72.0, 0.2) if layout == "rings" else cube_layout(size)
    views = torch.stack([field(view_directions(c))[None, None] for c in cameras]).float()
    h, w = 64, 128
    canvas, weight = perspective_to_equirect(views, cameras, h, w, weight="feather")
    assert (weight > 0).all(), "every canvas pixel is seen"
    truth = field(equirect_directions(h, w)).float()
    assert (canvas[0, 0] - truth).abs().max() < 5e-3


def test_cubemap_round_trip_and_masks_stay_exact_with_nearest():
    h, w = 64, 128
    image = torch.stack([field(equirect_directions(h, w)), equirect_directions(h, w)[..., 0]])[None].float()
    faces = equirect_to_cubemap(image, 48)
    assert faces.shape == (6, 1, 2, 48, 48)
    back = cubemap_to_equirect(faces, h, w)
    assert (back - image).abs().max() < 1e-2
    # front face = the view straight ahead, independently rendered from the field
    assert (faces[0, 0, 0] - field(view_directions(View(0, 0, 90, (48, 48)))).float()).abs().max() < 2e-3
    upper = (equirect_directions(h, w)[..., 1] > 0).float()[None, None]
    mask_back = cubemap_to_equirect(equirect_to_cubemap(upper, 48, mode="nearest"), h, w, mode="nearest")
    assert set(mask_back.unique().tolist()) <= {0.0, 1.0}
    rows_away_from_equator = torch.cat((torch.arange(0, h // 2 - 2), torch.arange(h // 2 + 2, h)))
    assert torch.equal(mask_back[..., rows_away_from_equator, :], upper[..., rows_away_from_equator, :])


def test_zdepth_and_ray_distance():
    face = View(0, 0, 90, (2, 2))
    plane = torch.full((2, 2), 2.0, dtype=torch.float64)  # a wall 2 m ahead
    distance = zdepth_to_distance(plane, face)
    assert torch.allclose(distance, torch.full((2, 2), 2 * math.sqrt(1.5), dtype=torch.float64))
    assert torch.allclose(distance_to_zdepth(distance, face), plane)


@pytest.mark.parametrize("fov,overlap", [(72.0, 0.1), (72.0, 0.25), (90.0, 0.25), (60.0, 0.3)])
def test_ring_layouts_cover_the_whole_sphere_with_overlap(fov, overlap):
    views = ring_layout((64, 64), fov, overlap)
    assert covers(views, overlap)
    count = coverage(views, 180, 360)
    assert count.min() >= 1, "every equirect pixel (1 degree grid) is seen by a view"
    assert count[0].min() >= 1 and count[-1].min() >= 1, "the pole rows too"
    assert (count >= 2).float().mean() > 0.2, "neighbouring views overlap"
    assert {v.pitch for v in views} >= {90.0, -90.0}


def test_ring_layout_for_512_px_models_and_the_cube_layout():
    views = ring_layout((64, 64), 72.0, 0.1)
    pitches = [v.pitch for v in views]
    assert len(views) == 22 and pitches.count(0.0) == 8 and pitches.count(90.0) == 1
    cube = cube_layout((64, 64))
    assert len(cube) == 14 and coverage(cube, 180, 360).min() >= 1 and covers(cube, 0.2)
    with pytest.raises(ValueError, match="overlap"):
        ring_layout((64, 64), 72.0, 1.0)


def test_rotate_equirect_yaw_is_a_column_roll_and_rotations_invert():
    h, w = 32, 64
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(rotate_equirect(image, 360 / w * 5, 0), image.roll(-5, dims=-1), atol=1e-5)
    smooth = field(equirect_directions(64, 128))[None, None].float()
    turned = rotate_equirect(smooth, 40, 25, 10)
    centre = field(view_directions(View(40, 25, 60, (1, 1), roll=10))[0, 0]).item()
    assert turned[0, 0, 31:33, 63:65].mean().item() == pytest.approx(centre, abs=5e-3)  # the new centre
    back = rotate_equirect(rotate_equirect(smooth, 0, 0, 10), 0, 0, -10)
    assert (back - smooth).abs().max() < 5e-3


def test_sphere_canvas_fixed_point_one_covering_view_and_keep_previous():
    cameras = ring_layout((32, 32), 90.0, 0.2)
    canvas = SphereCanvas(cameras, 48, 96)
    truth = field(equirect_directions(48, 96))[None, None].float()
    views = canvas.render(truth)
    assert views.shape == (len(cameras), 1, 1, 32, 32)
    fused, again = canvas.synchronise(views)
    assert (fused - truth).abs().max() < 2e-2 and (again - views).abs().max() < 2e-2  # consistent views: a fixed point
    # Views that disagree become renders of one canvas: their disagreement with the fused canvas drops.
    noisy = views + 0.3 * torch.randn(views.shape, generator=torch.Generator().manual_seed(0))
    _, synced = canvas.synchronise(noisy)

    def disagreement(v):
        return (canvas.render(canvas.fuse(v)) - v).abs().mean()

    assert disagreement(synced) < 0.25 * disagreement(noisy), (disagreement(synced), disagreement(noisy))
    # One view: pixels it does not see keep the previous canvas.
    single = SphereCanvas([View(0, 0, 90, (16, 16))], 32, 64)
    previous = torch.full((1, 1, 32, 64), 7.0)
    out = single.fuse(torch.zeros(1, 1, 1, 16, 16), previous)
    seen = single.total > 0
    assert (out[..., seen] == 0).all() and (out[..., ~seen] == 7).all() and 0.1 < seen.float().mean() < 0.4


def test_align_depth_recovers_scale_and_shift():
    depth = torch.rand(16, 16, generator=torch.Generator().manual_seed(1))
    reference = 2.5 * depth - 0.7
    valid = torch.zeros(16, 16, dtype=torch.bool)
    valid[4:12] = True
    scale, shift = align_depth(depth, reference, valid)
    assert scale == pytest.approx(2.5) and shift == pytest.approx(-0.7)
    assert align_depth(torch.ones(4, 4), reference[:4, :4], valid[:4, :4] | True) == (1.0, 0.0)


def test_quality_measures_tell_seams_and_pinched_poles():
    from ldm3d_core.sphere_metrics import pole_anisotropy, seam_ratio

    gen = torch.Generator().manual_seed(4)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 32, generator=gen), size=(64, 128), mode="bicubic")
    seamless = torch.cat([smooth, smooth.flip(-1)], dim=-1)  # column 0 mirrors column W - 1
    assert seam_ratio(seamless) < 0.5 and seam_ratio(seamless.roll(50, dims=-1)) < 1.5
    assert seam_ratio(smooth) > 3  # the two ends of an image that was not made to wrap
    # Equirect-native noise squeezed into the pole vs noise generated in the pole view itself.
    native = torch.nn.functional.interpolate(torch.rand(1, 3, 64, 128, generator=gen), size=(128, 256))
    up_view = torch.rand(1, 3, 128, 128, generator=gen)
    painted, _ = perspective_to_equirect(up_view[None], [View(0, 90, 90, (128, 128))], 256, 512)
    assert pole_anisotropy(native, "up") > 2.0
    assert 0.5 < pole_anisotropy(painted, "up", size=64) < 1.5
