"""Depth -> radial distance (ldm3d_stereo.md section 4.2), against the spec's formulas written out per element."""

from __future__ import annotations

import math

import pytest
import torch

from ldm3d_core.distance import DEPTH_MODES, DepthMapping, DepthMappingError, depth_to_distance, near_for_max_disparity
from ldm3d_core.ods import equator_shift_px

D = torch.tensor([[0.0, 0.1, 0.25, 0.5], [0.75, 0.9, 1.0, 0.333]], dtype=torch.float64)


def _each(fn):
    return torch.tensor([[fn(float(v)) for v in row] for row in D], dtype=torch.float64)


def test_inverse_matches_inverse_depth_affine():
    r = depth_to_distance(D, DepthMapping("inverse", near=0.8, far=30.0))
    assert torch.allclose(r, _each(lambda d: 1.0 / (d / 0.8 + (1 - d) / 30.0)), rtol=1e-12)
    assert r[0, 0] == pytest.approx(30.0) and r[1, 2] == pytest.approx(0.8)


def test_inverse_with_infinite_far():
    r = depth_to_distance(D, DepthMapping("inverse", near=2.0, far=math.inf))
    assert math.isinf(r[0, 0])
    assert torch.allclose(r.flatten()[1:], _each(lambda d: 2.0 / d if d else math.inf).flatten()[1:], rtol=1e-12)


def test_linear_metric_sphere_and_invert():
    linear = depth_to_distance(D, DepthMapping("linear", 1.0, 11.0))
    assert torch.allclose(linear, _each(lambda d: 1 + (1 - d) * 10), rtol=1e-12)
    assert torch.allclose(depth_to_distance(D, DepthMapping("metric", scale=7.0)), _each(lambda d: 7 * d), rtol=1e-12)
    # THREE.6DOF: sphere radius 6, displacement 4: r = 6 - 4 D
    assert torch.allclose(depth_to_distance(D, DepthMapping("sphere_displace")), _each(lambda d: 6 - 4 * d), rtol=1e-12)
    inv = depth_to_distance(D, DepthMapping("linear", 1.0, 11.0, invert=True))
    assert torch.allclose(inv, _each(lambda d: 1 + d * 10), rtol=1e-12)


def test_white_is_near_and_monotone():
    d = torch.linspace(0, 1, 101)
    for mode in ("inverse", "linear", "sphere_displace"):
        r = depth_to_distance(d, DepthMapping(mode, 1.0, 20.0))
        assert (r[1:] < r[:-1]).all(), mode
    assert (depth_to_distance(d, DepthMapping("metric"))[1:] > depth_to_distance(d, DepthMapping("metric"))[:-1]).all()


def test_clamps_range_keeps_dtype_device_and_input():
    d = torch.tensor([-0.5, 0.5, 1.5], dtype=torch.float16)
    d0 = d.clone()
    r = depth_to_distance(d, DepthMapping("linear", 1.0, 3.0))
    assert r.dtype == torch.float32 and r.tolist() == [3.0, 2.0, 1.0]
    assert torch.equal(d, d0)
    assert depth_to_distance(D.float(), DepthMapping("inverse")).dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(mode="inverse", near=2.0, far=1.0), "far"),
        (dict(mode="inverse", near=2.0, far=2.0), "far"),
        (dict(mode="inverse", near=0.0), "near"),
        (dict(mode="linear", near=-1.0, far=5.0), "near"),
        (dict(mode="linear", far=math.inf), "far"),
        (dict(mode="metric", scale=-1.0), "scale"),
        (dict(mode="metric", scale=0.0), "scale"),
        (dict(mode="sphere_displace", radius=4.0, displacement=4.0), "displacement"),
        (dict(mode="sphere_displace", displacement=-0.1), "displacement"),
        (dict(mode="sphere_displace", radius=0.0, displacement=0.0), "radius"),
        (dict(mode="disparity"), "mode"),
        (dict(mode="inverse", near=math.nan), "near"),
        (dict(mode="metric", far=math.nan), "far"),  # every number is checked, even those the mode does not use
        (dict(mode="inverse", far=-math.inf), "far"),
        (dict(mode="linear", radius=math.inf), "radius"),
        (dict(mode="inverse", scale="10"), "scale"),
        (dict(mode="inverse", near=True), "near"),
        (dict(invert=1), "invert"),
    ],
)
def test_depth_mapping_refuses_bad_parameters_naming_the_field(kwargs, field):
    with pytest.raises(DepthMappingError) as info:
        DepthMapping(**kwargs)
    err = info.value
    assert isinstance(err, ValueError) and err.field == field and err.value is kwargs.get(field, err.value)
    assert str(err).startswith(f"{field} = ") and err.problem in str(err)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(mode="inverse", near=0.5, far=math.inf),
        dict(mode="linear", near=1.0, far=1.0 + 1e-9),
        dict(mode="metric", scale=1e-3),
        dict(mode="sphere_displace", radius=6.0, displacement=0.0),
        dict(mode="sphere_displace", radius=1.0, displacement=0.999),
        dict(mode="metric", near=-5.0, far=1.0),  # inverse/linear limits do not apply to other modes
        dict(mode="inverse", radius=-1.0, displacement=9.0),
    ],
)
def test_depth_mapping_accepts_valid_parameters_and_is_frozen(kwargs):
    mapping = DepthMapping(**kwargs)
    assert all(getattr(mapping, k) == v for k, v in kwargs.items())
    with pytest.raises(AttributeError):
        mapping.near = 3.0


def test_depth_to_distance_needs_a_mapping():
    with pytest.raises(TypeError, match="DepthMapping"):
        depth_to_distance(D, "inverse")


def test_nan_depth_raises():
    with pytest.raises(ValueError, match="NaN"):
        depth_to_distance(torch.tensor([0.5, float("nan")]), DepthMapping())


def test_near_for_max_disparity_round_trip():
    near = near_for_max_disparity(0.064, 20.0, 4096)
    assert equator_shift_px(near, 0.064, 4096) == pytest.approx(20.0, rel=1e-12)
    assert set(DEPTH_MODES) == {"inverse", "linear", "metric", "sphere_displace"}
