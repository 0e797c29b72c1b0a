"""Stereo layouts (P11): packing by explicit slicing, eye swap, anaglyph channels, masks, unpack, detection."""

from __future__ import annotations

import pytest
import torch

from ldm3d_core.layouts import FILE_SUFFIX, anaglyph, detect_layout, pack_stereo, unpack_stereo


def _eyes(b=2, h=4, w=8):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, h, w, 3, generator=g), torch.rand(b, h, w, 3, generator=g)


def test_top_bottom_left_on_top():
    left, right = _eyes()
    tb = pack_stereo(left, right, "top_bottom")
    assert tb.shape == (2, 8, 8, 3)
    assert torch.equal(tb[:, :4], left) and torch.equal(tb[:, 4:], right)
    sw = pack_stereo(left, right, "top_bottom", swap_eyes=True)
    assert torch.equal(sw[:, :4], right) and torch.equal(sw[:, 4:], left)


def test_side_by_side_left_on_left():
    left, right = _eyes()
    sbs = pack_stereo(left, right, "side_by_side")
    assert sbs.shape == (2, 4, 16, 3)
    assert torch.equal(sbs[:, :, :8], left) and torch.equal(sbs[:, :, 8:], right)


def test_anaglyph_red_from_left_cyan_from_right():
    left, right = _eyes()
    a = pack_stereo(left, right, "anaglyph")
    for b in range(2):
        for y in range(4):
            for x in range(8):
                assert a[b, y, x].tolist() == [
                    left[b, y, x, 0].item(),
                    right[b, y, x, 1].item(),
                    right[b, y, x, 2].item(),
                ]
    assert torch.equal(anaglyph(right, left), pack_stereo(left, right, "anaglyph", swap_eyes=True))


def test_masks_pack_and_unpack_round_trip():
    ml, mr = torch.zeros(1, 4, 8), torch.ones(1, 4, 8)
    tb = pack_stereo(ml, mr, "top_bottom")
    assert tb.shape == (1, 8, 8) and tb[0, :4].sum() == 0 and tb[0, 4:].sum() == 32
    assert pack_stereo(ml, mr, "side_by_side").shape == (1, 4, 16)
    left, right = _eyes()
    for layout in ("top_bottom", "side_by_side"):
        a, b = unpack_stereo(pack_stereo(left, right, layout), layout)
        assert torch.equal(a, left) and torch.equal(b, right)


def test_detection_suffixes_and_errors():
    assert detect_layout(2048, 2048) == "top_bottom" and detect_layout(512, 2048) == "side_by_side"
    assert detect_layout(512, 1024) is None
    assert FILE_SUFFIX == {"top_bottom": "_360_TB", "side_by_side": "_360_LR"}
    left, right = _eyes()
    with pytest.raises(ValueError, match="same shape"):
        pack_stereo(left, right[:, :2], "top_bottom")
    with pytest.raises(ValueError, match="layout"):
        pack_stereo(left, right, "checkerboard")
    left0 = left.clone()
    pack_stereo(left, right, "top_bottom", swap_eyes=True)
    assert torch.equal(left, left0)
