"""Depth nodes in-process on real ComfyUI: pack/unpack, 16-bit PNG save/load, bad input."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from comfy_harness import run_node, run_node_ui

ALL_CODES = torch.arange(65536, dtype=torch.int64).reshape(1, 256, 256)


def _ui(node_cls, **inputs) -> dict:
    """The node's ui payload as ComfyUI sends it (as_dict of the V3 UI object)."""
    _, ui = run_node_ui(node_cls, **inputs)
    return ui.as_dict() if hasattr(ui, "as_dict") else ui


@pytest.fixture(scope="module")
def dn(pack):
    return pack.node_module("ldm3d.depth_nodes")


def test_registered(pack):
    for node_id in ("SDL3D_PackDepthRGB", "SDL3D_UnpackDepthRGB", "SDL3D_SaveDepthPNG16", "SDL3D_LoadDepthPNG"):
        assert node_id in pack.by_id
        schema = pack.by_id[node_id].GET_SCHEMA()
        assert schema.description and all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)


def test_pack_unpack_nodes_exact_every_code(dn):
    depth = ALL_CODES.float() / 65535
    before = depth.clone()
    (packed,) = run_node(dn.PackDepthRGB, depth=depth)
    assert torch.equal(depth, before)
    # oracle: bytes by integer division; through an 8-bit PNG-like quantisation
    as_bytes = torch.round(packed * 255).long()
    assert torch.equal(as_bytes[..., 1], ALL_CODES // 256) and torch.equal(as_bytes[..., 2], ALL_CODES % 256)
    (back,) = run_node(dn.UnpackDepthRGB, packed=as_bytes.float() / 255, mode="exact")
    assert torch.equal(torch.round(back.double() * 65535).long(), ALL_CODES)
    g200 = torch.tensor([[[[0.0, 200 / 255, 100 / 255]]]])
    assert round(run_node(dn.UnpackDepthRGB, packed=g200, mode="exact")[0].item() * 65535) == 51300


def test_save_load_png16_round_trip(comfy, dn):
    depth = torch.cat([ALL_CODES.float() / 65535, torch.rand(1, 256, 256)])
    before = depth.clone()
    ui = _ui(dn.SaveDepthPNG16, depth=depth, filename_prefix="sdl3d_test/depth")
    assert torch.equal(depth, before)
    images = ui["images"]
    assert len(images) == 2 and images[0]["subfolder"] == "sdl3d_test" and images[0]["type"] == "output"
    out_dir = os.path.join(comfy.folder_paths.get_output_directory(), "sdl3d_test")
    first = os.path.join(out_dir, images[0]["filename"])
    assert images[0]["filename"].startswith("depth_") and images[0]["filename"].endswith("_.png")
    with Image.open(first) as im:
        assert im.mode.startswith("I") and im.size == (256, 256)
        np.testing.assert_array_equal(np.array(im).astype(np.int64), ALL_CODES[0].numpy())
    # second save continues the counter instead of overwriting
    ui2 = _ui(dn.SaveDepthPNG16, depth=depth[:1], filename_prefix="sdl3d_test/depth")
    assert ui2["images"][0]["filename"] not in {i["filename"] for i in images}
    # load it back through the input folder
    name = "sdl3d_depth16_roundtrip.png"
    os.replace(first, os.path.join(comfy.folder_paths.get_input_directory(), name))
    assert name in dn.LoadDepthPNG.GET_SCHEMA().inputs[0].options
    loaded, bits = run_node(dn.LoadDepthPNG, image=name)
    assert bits == 16 and loaded.shape == (1, 256, 256) and loaded.dtype == torch.float32
    assert torch.equal(torch.round(loaded.double() * 65535).long(), ALL_CODES)


def test_load_8bit_flagged_and_rgb_rejected(comfy, dn, caplog):
    folder = comfy.folder_paths.get_input_directory()
    grey = np.arange(256, dtype=np.uint8).reshape(16, 16)
    Image.fromarray(grey).save(os.path.join(folder, "sdl3d_depth8.png"))
    with caplog.at_level(logging.WARNING):
        depth, bits = run_node(dn.LoadDepthPNG, image="sdl3d_depth8.png")
    assert bits == 8 and "8-bit" in caplog.text
    assert torch.allclose(depth[0], torch.from_numpy(grey).float() / 255)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(folder, "sdl3d_rgb.png"))
    with pytest.raises(ValueError, match=r"Load Depth PNG \(16-bit\): input 'image' = 'sdl3d_rgb.png'.*RGB.*Fix:"):
        run_node(dn.LoadDepthPNG, image="sdl3d_rgb.png")
    with pytest.raises(ValueError, match=r"Load Depth PNG \(16-bit\): input 'image'.*no such file.*Fix:"):
        run_node(dn.LoadDepthPNG, image="does_not_exist.png")
    assert "no such file" in dn.LoadDepthPNG.validate_inputs(image="does_not_exist.png")


def test_bad_depth_inputs(dn):
    nan = torch.zeros(1, 4, 4)
    nan[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"Save Depth PNG \(16-bit\): input 'depth'.*NaN"):
        run_node(dn.SaveDepthPNG16, depth=nan, filename_prefix="x")
    with pytest.raises(ValueError, match=r"Save Depth PNG \(16-bit\): input 'depth'.*outside \[0, 1\]"):
        run_node(dn.SaveDepthPNG16, depth=torch.full((1, 4, 4), 1.5), filename_prefix="x")
    with pytest.raises(ValueError, match=r"Unpack RGB to Depth \(16-bit\): input 'packed'.*channels"):
        run_node(dn.UnpackDepthRGB, packed=torch.zeros(1, 4, 4, 4), mode="exact")
    inf = torch.zeros(1, 4, 4, 3)
    inf[..., 0] = float("inf")
    with pytest.raises(ValueError, match="NaN/inf"):
        run_node(dn.UnpackDepthRGB, packed=inf, mode="exact")
