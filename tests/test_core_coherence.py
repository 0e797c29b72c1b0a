"""sync_core.coherence: Intra-LPIPS and Intra-Style-L against the plain re-implementations in
tests/oracles/coherence_metrics.py (loops over crop pairs, Gram matrices by hand), crop enumeration, backbone
loading. Random-weight backbones (fixtures)."""

import math

import pytest
import torch
from oracles.coherence_metrics import plain_boxes, plain_intra_lpips, plain_intra_style

from sync_core.coherence import (
    STYLE_BACKBONE_FILE,
    StyleWeightsMissing,
    build_style_vgg,
    crop_boxes,
    crop_pairs,
    find_style_weights,
    intra_lpips,
    intra_style_loss,
    style_resize_size,
)
from sync_core.perceptual import BACKBONE_FILES, build_lpips


# ---- fixtures ------------------------------------------------------------------------------------------------------
@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


@pytest.fixture(scope="module")
def lpips_vgg(lpips_dir):
    return build_lpips("vgg", backbone_path=str(lpips_dir / BACKBONE_FILES["vgg"]))


@pytest.fixture(scope="module")
def vgg19_sd(lpips_dir):
    return torch.load(lpips_dir / STYLE_BACKBONE_FILE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def style_vgg(vgg19_sd):
    return build_style_vgg(backbone_state_dict=vgg19_sd)


def _textures(kind, n_crops, crop, seed=0):
    """A 1-row panorama [3, crop, n*crop]: 'same' = independent samples of one smooth coloured-noise texture,
    'different' = every crop its own colour, frequency and pattern."""
    g = torch.Generator().manual_seed(seed)
    tiles = []
    assert crop % 8 == 0
    for k in range(n_crops):
        if kind == "same":
            base = torch.nn.functional.interpolate(
                torch.rand(1, 1, crop // 8, crop // 8, generator=g), size=crop, mode="bilinear"
            )[0]
            tiles.append(0.2 + 0.6 * base * torch.tensor([0.9, 0.5, 0.2]).view(3, 1, 1))
        else:
            freq = 1 + 3 * k
            yy, xx = torch.meshgrid(torch.arange(crop), torch.arange(crop), indexing="ij")
            pattern = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * (xx if k % 2 else yy) / crop)
            colour = torch.rand(3, 1, 1, generator=g)
            tiles.append((pattern[None] * colour + 0.1 * torch.rand(3, crop, crop, generator=g)).clamp(0, 1))
    return torch.cat(tiles, dim=2)


# ---- crops ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "h,w,crop,stride",
    [
        (512, 3072, 512, 512),
        (512, 1300, 512, 512),
        (1024, 1536, 512, 512),
        (1100, 1100, 512, 512),
        (64, 200, 64, 32),
        (96, 96, 96, 96),
    ],
)
def test_crop_boxes_match_plain_grid(h, w, crop, stride):
    assert crop_boxes(h, w, crop, stride) == plain_boxes(h, w, crop, stride)


def test_crop_counts_of_the_paper_and_edge_cases():
    boxes = crop_boxes(512, 3072)
    assert len(boxes) == 6 and len(crop_pairs(6)) == 15  # the paper's 512x3072 panoramas
    assert boxes[-1] == (0, 512, 2560, 3072)
    assert crop_boxes(512, 1300) == [(0, 512, 0, 512), (0, 512, 512, 1024)]  # 276 px remainder not evaluated
    assert crop_boxes(1024, 1536)[3] == (512, 1024, 0, 512)  # second row starts after the first (row-major)
    assert crop_pairs(3) == [(0, 1), (0, 2), (1, 2)] and crop_pairs(1) == []
    for h, w in ((511, 3072), (512, 100)):
        with pytest.raises(ValueError, match="holds no 512x512 crop"):
            crop_boxes(h, w)
    for crop, stride in ((0, None), (64, 0), (64, -8), (64.5, None)):
        with pytest.raises(ValueError, match="positive integers"):
            crop_boxes(128, 128, crop, stride)
    assert style_resize_size(1024, 4096, 512) == (512, 2048)
    assert style_resize_size(700, 1000, 512) == (512, 731)  # torchvision truncates the long side
    assert style_resize_size(2048, 1024, 512) == (1024, 512)


# ---- metrics against the plain re-implementations ------------------------------------------------------------------
def test_intra_lpips_matches_plain_pair_loop(lpips_vgg):
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 32, 150, generator=g)  # 4 crops (22 px remainder), 6 pairs each
    before = images.clone()
    want, want_each = plain_intra_lpips(lpips_vgg, images, 32)
    for crop_batch, pair_batch in ((1, 1), (3, 2), (8, 64)):  # every grouping of features and pairs: same numbers
        seen = []
        got = intra_lpips(
            lpips_vgg,
            images,
            crop=32,
            crop_batch=crop_batch,
            pair_batch=pair_batch,
            progress=lambda d, t, seen=seen: seen.append((d, t)),
        )
        assert (got.crops, got.pairs) == (4, 6)
        torch.testing.assert_close(got.per_image, torch.tensor(want_each, dtype=torch.float64), rtol=1e-5, atol=1e-7)
        assert got.value == pytest.approx(want, rel=1e-5)
        assert seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == list(range(1, len(seen) + 1))
    assert torch.equal(images, before)


def test_intra_lpips_grid_rows_for_tall_images(lpips_vgg):
    images = torch.rand(1, 3, 70, 70, generator=torch.Generator().manual_seed(2))  # 2x2 crops of 32, remainders
    want, _ = plain_intra_lpips(lpips_vgg, images, 32)
    got = intra_lpips(lpips_vgg, images, crop=32, crop_batch=2)
    assert (got.crops, got.pairs) == (4, 6)
    assert got.value == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(
    "shape,crop_batch,pair_batch", [((2, 3, 64, 256), 4, 256), ((1, 3, 128, 400), 2, 1), ((1, 3, 70, 200), 1, 4)]
)
def test_intra_style_matches_plain_gram_loop(style_vgg, vgg19_sd, shape, crop_batch, pair_batch):
    images = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    want, want_each = plain_intra_style(vgg19_sd, images, 64)
    got = intra_style_loss(style_vgg, images, crop=64, crop_batch=crop_batch, pair_batch=pair_batch)
    torch.testing.assert_close(got.per_image, torch.tensor(want_each, dtype=torch.float64), rtol=1e-4, atol=1e-10)
    assert got.value == pytest.approx(want, rel=1e-4)
    assert got.value > 0


def test_identical_crops_score_exactly_zero(lpips_vgg, style_vgg):
    tile = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(4))
    images = tile.repeat(1, 1, 4)[None]  # [1, 3, 32, 128]: four identical crops
    assert intra_lpips(lpips_vgg, images, crop=32).value == 0.0
    assert intra_style_loss(style_vgg, images, crop=32).value == 0.0
    images[..., 100] = 1.0 - images[..., 100]  # one column of one crop changes: no longer zero
    assert intra_lpips(lpips_vgg, images, crop=32).value > 0
    assert intra_style_loss(style_vgg, images, crop=32).value > 0


def test_coherent_texture_ranks_below_incoherent_crops(lpips_vgg, style_vgg):
    for seed in range(2):
        same = _textures("same", 4, 32, seed)[None]
        different = _textures("different", 4, 32, seed)[None]
        assert intra_lpips(lpips_vgg, same, crop=32).value < intra_lpips(lpips_vgg, different, crop=32).value
        assert intra_style_loss(style_vgg, same, crop=32).value < intra_style_loss(style_vgg, different, crop=32).value


def test_bad_inputs(lpips_vgg, style_vgg, lpips_dir):
    one_crop = torch.rand(1, 3, 32, 50)
    with pytest.raises(ValueError, match="holds 1 32x32 crop"):
        intra_lpips(lpips_vgg, one_crop, crop=32)
    with pytest.raises(ValueError, match="holds 1 64x64 crop"):
        intra_style_loss(style_vgg, torch.rand(1, 3, 128, 128), crop=64)  # resized to 64x64 first
    with pytest.raises(ValueError, match="holds no"):
        intra_style_loss(style_vgg, torch.rand(1, 3, 32, 400), crop=64)  # never upscaled
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        intra_lpips(lpips_vgg, torch.rand(3, 32, 64), crop=32)
    with pytest.raises(ValueError, match="crop_batch and pair_batch"):
        intra_lpips(lpips_vgg, torch.rand(1, 3, 32, 64), crop=32, crop_batch=0)
    spatial = build_lpips("vgg", backbone_path=str(lpips_dir / BACKBONE_FILES["vgg"]))
    spatial.spatial = True
    with pytest.raises(ValueError, match="spatial=False"):
        intra_lpips(spatial, torch.rand(1, 3, 32, 64), crop=32)


# ---- the VGG19 backbone --------------------------------------------------------------------------------------------
def test_style_vgg_is_torchvision_vgg19_up_to_conv3_1(style_vgg, vgg19_sd, lpips_dir, empty_hub):
    assert len(style_vgg) == 11 and isinstance(style_vgg[10], torch.nn.Conv2d) and style_vgg[10].out_channels == 256
    assert not style_vgg.training and not any(p.requires_grad for p in style_vgg.parameters())
    assert not any(getattr(m, "inplace", False) for m in style_vgg)
    assert torch.equal(style_vgg[10].weight, vgg19_sd["features.10.weight"])
    by_path = build_style_vgg(search_dirs=[str(lpips_dir)])
    assert torch.equal(by_path[7].weight, vgg19_sd["features.7.weight"])
    subset = {k: v for k, v in vgg19_sd.items() if int(k.split(".")[1]) <= 10}
    assert torch.equal(
        build_style_vgg(backbone_state_dict={"module." + k: v for k, v in subset.items()})[5].bias,
        vgg19_sd["features.5.bias"],
    )


def test_style_vgg_rejects_vgg16_and_missing_files(lpips_dir, tmp_path, empty_hub):
    vgg16 = torch.load(lpips_dir / BACKBONE_FILES["vgg"], map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match="VGG16"):
        build_style_vgg(backbone_state_dict=vgg16)
    with pytest.raises(ValueError, match="not a torchvision VGG19"):
        build_style_vgg(backbone_state_dict={"features.0.weight": vgg16["features.0.weight"]})
    folder = tmp_path / "models" / "lpips"
    folder.mkdir(parents=True)
    with pytest.raises(StyleWeightsMissing) as info:
        build_style_vgg(search_dirs=[str(folder)])
    msg = str(info.value)
    assert STYLE_BACKBONE_FILE in msg and str(folder) in msg and str(empty_hub / "checkpoints") in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(StyleWeightsMissing, match="does not exist"):
        build_style_vgg(backbone_path=str(folder / "nope.pth"))
    assert find_style_weights([str(folder)]) is None
    (empty_hub / "checkpoints").mkdir(parents=True)
    (empty_hub / "checkpoints" / STYLE_BACKBONE_FILE).write_bytes(b"x")
    assert find_style_weights([str(folder)]) == str(empty_hub / "checkpoints" / STYLE_BACKBONE_FILE)


# ---- scripts/coherence.py (a subprocess: the script puts the repo root on sys.path) -------------------------------
def test_script_groups_files_and_matches_plain(lpips_dir, lpips_vgg, vgg19_sd, tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "w0").mkdir()
    arrays = {
        "w0/a.png": rng.integers(0, 256, (32, 100, 3), dtype=np.uint8),
        "w0/b.png": rng.integers(0, 256, (40, 80, 3), dtype=np.uint8),  # style: resized to 32x64
        "w0/small.png": rng.integers(0, 256, (32, 40, 3), dtype=np.uint8),
        "w20.png": np.tile(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (1, 3, 1)),
    }
    for name, array in arrays.items():
        Image.fromarray(array).save(tmp_path / name)
    script = Path(__file__).resolve().parents[1] / "scripts" / "coherence.py"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}
    out = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "w0"),
            str(tmp_path / "w20.png"),
            "--crop",
            "32",
            "--lpips-dir",
            str(lpips_dir),
            "--json",
            str(tmp_path / "s.json"),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "skipped" in out.stderr and "small.png" in out.stderr and "holds 1 32x32 crop" in out.stderr
    result = json.loads((tmp_path / "s.json").read_text())
    w0, w20 = result["groups"]
    assert [Path(r["file"]).name for r in w0["images"]] == ["a.png", "b.png"] and w20["count"] == 1

    def as_tensor(name):
        return torch.from_numpy(arrays[name]).permute(2, 0, 1)[None].float() / 255.0

    for row, name in zip(w0["images"], ("w0/a.png", "w0/b.png")):
        assert row["intra_lpips"] == pytest.approx(plain_intra_lpips(lpips_vgg, as_tensor(name), 32)[0], rel=1e-5)
        assert row["intra_style"] == pytest.approx(plain_intra_style(vgg19_sd, as_tensor(name), 32)[0], rel=1e-4)
    assert w0["intra_lpips"] == pytest.approx((w0["images"][0]["intra_lpips"] + w0["images"][1]["intra_lpips"]) / 2)
    assert w20["intra_lpips"] == 0.0 and w20["intra_style"] == 0.0  # three identical crops
    assert "mean of 2 image(s)" in out.stdout and "Intra-Style-L" in out.stdout
    # no backbone anywhere: a clear message naming the file, exit status 2
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "w20.png"), "--lpips-dir", str(empty)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert missing.returncode == 2 and "vgg16-397923af.pth" in missing.stderr and str(empty) in missing.stderr
