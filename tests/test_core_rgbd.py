"""Core tests for ldm3d_core.rgbd, depth_png and tiling (no ComfyUI). Oracles are plain formulas/loops here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ldm3d_core import depth_png, rgbd, tiling

ALL_CODES = torch.arange(65536, dtype=torch.int32).reshape(1, 256, 256)


def test_pack_unpack_exact_for_every_code():
    depth = ALL_CODES.double() / 65535.0
    packed = rgbd.pack_depth_rgb(depth)
    assert packed.shape == (1, 256, 256, 3)
    codes = ALL_CODES.numpy().astype(np.int64)
    # oracle: bytes by integer division, channel value = byte / 255
    np.testing.assert_array_equal(np.round(packed[..., 1].numpy() * 255), codes // 256)
    np.testing.assert_array_equal(np.round(packed[..., 2].numpy() * 255), codes % 256)
    np.testing.assert_array_equal(packed[..., 0].numpy(), packed[..., 1].numpy())
    back, code = rgbd.unpack_depth_rgb(packed)
    assert torch.equal(code, ALL_CODES)
    assert torch.equal(back, ALL_CODES.float() / 65535.0)


def test_g200_b100_is_51300():
    packed = torch.tensor([[[[0.3, 200 / 255, 100 / 255]]]])
    _, code = rgbd.unpack_depth_rgb(packed)
    assert code.item() == 51300
    decoded = torch.tensor([[[[0.1, 0.2, 0.3, 0.9, 200 / 255, 100 / 255]]]])
    _, depth, code = rgbd.split_rgbd(decoded)
    assert code.item() == 51300 and depth.item() == pytest.approx(51300 / 65535, abs=1e-7)


def test_hi_only_drops_low_byte():
    decoded = torch.tensor([[[[0.1, 0.2, 0.3, 0.0, 18 / 255, 52 / 255]]]])
    assert rgbd.split_rgbd(decoded, "hi_only")[2].item() == 18 * 256
    assert rgbd.split_rgbd(decoded, "exact")[2].item() == 0x1234


def test_split_6ch_matches_loop_oracle_and_ignores_channel_3():
    g = torch.Generator().manual_seed(0)
    decoded = torch.rand(2, 5, 7, 6, generator=g)
    rgb, depth, code = rgbd.split_rgbd(decoded)
    assert torch.equal(rgb, decoded[..., :3])
    for b in range(2):
        for y in range(5):
            for x in range(7):
                hi = int(round(float(decoded[b, y, x, 4]) * 255))
                lo = int(round(float(decoded[b, y, x, 5]) * 255))
                assert code[b, y, x].item() == 256 * hi + lo
    other = decoded.clone()
    other[..., 3] = 1 - other[..., 3]
    assert torch.equal(rgbd.split_rgbd(other)[2], code)
    assert torch.allclose(depth, code.float() / 65535)


def test_split_4ch_depth_is_channel_3_and_input_unchanged():
    decoded = torch.rand(1, 4, 6, 4)
    before = decoded.clone()
    rgb, depth, code = rgbd.split_rgbd(decoded)
    assert torch.equal(depth, decoded[..., 3]) and torch.equal(rgb, decoded[..., :3])
    assert torch.equal(code, torch.round(decoded[..., 3] * 65535).int())
    assert torch.equal(decoded, before)


def test_merge_split_round_trip_every_code_4_and_6_channels():
    depth = ALL_CODES.float() / 65535.0
    rgb = torch.rand(1, 256, 256, 3)
    for channels in (4, 6):
        merged = rgbd.merge_rgbd(rgb, depth, channels)
        assert merged.shape == (1, 256, 256, channels)
        back_rgb, back_depth, code = rgbd.split_rgbd(merged)
        assert torch.equal(code, ALL_CODES), channels
        assert torch.equal(back_rgb, rgb)
    six = rgbd.merge_rgbd(rgb, depth, 6)
    assert torch.equal(six[..., 3], six[..., 4])  # R = G by convention (spec 1.5)


def test_merge_broadcasts_batch_and_rejects_mismatch():
    out = rgbd.merge_rgbd(torch.rand(3, 4, 4, 3), torch.rand(1, 4, 4), 4)
    assert out.shape == (3, 4, 4, 4)
    with pytest.raises(ValueError, match="sizes differ"):
        rgbd.merge_rgbd(torch.rand(1, 4, 4, 3), torch.rand(1, 4, 5), 4)
    with pytest.raises(ValueError, match="4 or 6"):
        rgbd.merge_rgbd(torch.rand(1, 4, 4, 3), torch.rand(1, 4, 4), 3)
    with pytest.raises(ValueError, match="4 or 6"):
        rgbd.split_rgbd(torch.rand(1, 4, 4, 3))


def test_depth_preview_is_grey():
    d = torch.rand(2, 3, 4)
    p = rgbd.depth_preview(d)
    assert p.shape == (2, 3, 4, 3) and all(torch.equal(p[..., i], d) for i in range(3))


# ---------------------------------------------------------------- 16-bit PNG


def test_png16_round_trip_every_code(tmp_path):
    codes = ALL_CODES[0].numpy().astype(np.uint16)
    path = tmp_path / "d.png"
    depth_png.save_depth_png(path, codes)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode.startswith("I")
        raw = np.array(im)
    np.testing.assert_array_equal(raw.astype(np.int64), codes.astype(np.int64))
    loaded = depth_png.load_depth_png(path)
    assert loaded.bits == 16
    np.testing.assert_array_equal(
        np.round(loaded.depth.astype(np.float64) * 65535).astype(np.int64), codes.astype(np.int64)
    )


def test_png_8bit_flagged_and_rgb_rejected(tmp_path):
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    loaded = depth_png.load_depth_png(tmp_path / "g8.png")
    assert loaded.bits == 8
    np.testing.assert_allclose(loaded.depth, grey / 255.0, atol=1e-7)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(depth_png.DepthPNGError, match="RGB"):
        depth_png.load_depth_png(tmp_path / "rgb.png")
    with pytest.raises(ValueError):
        depth_png.save_depth_png(tmp_path / "bad.png", np.full((2, 2), 70000, np.int64))


# ---------------------------------------------------------------- tiling


def _pointwise_decode(z: torch.Tensor) -> torch.Tensor:
    """A decoder without border effects: nearest 8x upsample and a fixed channel mix (C -> 5)."""
    mix = torch.arange(5 * z.shape[1], dtype=torch.float32).reshape(5, z.shape[1]) / 10 - 0.7
    return torch.einsum("oc,bchw->bohw", mix, F.interpolate(z, scale_factor=8, mode="nearest"))


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("shape,tile,overlap", [((5, 13), 4, 1), ((9, 20), 6, 2), ((3, 3), 8, 2), ((8, 24), 8, 7)])
def test_tiled_decode_reproduces_untiled_for_local_decoder(circular, shape, tile, overlap):
    z = torch.randn(2, 4, *shape, generator=torch.Generator().manual_seed(1))
    calls = []
    out = tiling.decode_tiled(
        z, _pointwise_decode, tile, overlap, 8, circular_x=circular, progress=lambda d, t: calls.append((d, t))
    )
    ref = _pointwise_decode(z)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    assert calls[-1][0] == calls[-1][1] == len(calls)


def test_tile_starts_cover_with_overlap():
    for length in range(1, 60):
        for tile in (4, 7, 16):
            for overlap in range(0, tile):
                starts = tiling.tile_starts(length, tile, overlap)
                covered = set()
                for a, b in zip(starts, starts[1:]):
                    assert a + tile - b >= overlap
                for s in starts:
                    covered |= set(range(s, min(s + tile, length)))
                assert covered == set(range(length)) and starts[-1] + min(tile, length) == length
                cs = tiling.circular_tile_starts(length, tile, overlap)
                if len(cs) > 1:
                    gaps = [(b - a) % length for a, b in zip(cs, cs[1:] + cs[:1])]
                    assert max(gaps) <= tile - overlap


def test_circular_untiled_decode_equals_circular_convolution():
    z = torch.randn(1, 2, 4, 6, generator=torch.Generator().manual_seed(2))
    kernel = torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(3))

    def conv_decode(t):  # zero-padded 3x3 conv after nearest upsample: has border effects
        return F.conv2d(F.interpolate(t, scale_factor=8, mode="nearest"), kernel, padding=1)

    out = tiling.decode_circular(z, conv_decode, pad=1, scale=8)
    up = F.interpolate(z, scale_factor=8, mode="nearest")
    oracle = F.conv2d(F.pad(up, (1, 1, 0, 0), mode="circular"), kernel, padding=(1, 0))
    assert torch.allclose(out, oracle, atol=1e-5)
    plain = conv_decode(z)
    assert not torch.allclose(plain[..., 0], oracle[..., 0], atol=1e-3)  # the wrap really changes the seam


def test_tiling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="overlap < tile"):
        tiling.tile_starts(10, 4, 4)
    with pytest.raises(ValueError, match="expected"):
        tiling.decode_tiled(torch.zeros(1, 1, 4, 4), lambda t: t, 2, 1, 8)


@pytest.mark.parametrize("circular", [False, True])
@pytest.mark.parametrize("shape,tile,overlap", [((5, 13), 4, 1), ((8, 24), 8, 3), ((3, 3), 8, 2)])
def test_tiled_encode_reproduces_untiled_for_local_encoder(circular, shape, tile, overlap):
    """Encoding (pixels -> latent, 8x down) uses the same tiling: a border-free encoder is reproduced exactly."""
    pixels = torch.randn(2, 3, shape[0] * 8, shape[1] * 8, generator=torch.Generator().manual_seed(4))
    mix = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 7 - 0.5

    def encode(t):  # 8x8 average pool and a fixed channel mix (3 -> 4): no border effects
        return torch.einsum("oc,bchw->bohw", mix, F.avg_pool2d(t, 8))

    out = tiling.encode_tiled(pixels, encode, tile, overlap, 8, circular_x=circular)
    assert out.shape == (2, 4, *shape)
    assert torch.allclose(out, encode(pixels), atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the VAE scale"):
        tiling.encode_tiled(pixels[..., :-1], encode, tile, overlap, 8)
