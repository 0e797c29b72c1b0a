"""Stereo 360 and mesh nodes in-process on real ComfyUI: outputs, bad inputs, inputs unchanged, files on disk."""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import pytest
import torch

from comfy_harness import run_api_graph, run_node, run_node_ui
from workflow_overrides import shrink_workflow

H, W = 16, 32

STEREO_DEFAULTS = dict(
    ipd_m=0.064,
    depth_mode="inverse",
    near_m=1.0,
    far_m=20.0,
    invert_depth=False,
    metric_scale_m=10.0,
    sphere_radius_m=6.0,
    displacement_m=4.0,
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
)
MESH_DEFAULTS = dict(
    format="glb",
    mesh_width=16,
    mesh_height=8,
    depth_mode="sphere_displace",
    near_m=1.0,
    far_m=20.0,
    invert_depth=False,
    metric_scale_m=10.0,
    sphere_radius_m=6.0,
    displacement_m=4.0,
    cull_edges=False,
    edge_ratio_tau=0.2,
    filename_prefix="sdl3d_test_mesh/sphere",
)


@pytest.fixture(scope="module")
def sn(pack):
    return pack.node_module("stereo.ods_nodes")


@pytest.fixture(scope="module")
def so(pack):
    return pack.node_module("stereo.output_nodes")


@pytest.fixture(scope="module")
def mn(pack):
    return pack.node_module("stereo.mesh_nodes")


def _inputs(b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, H, W, 3, generator=g)
    depth = torch.full((b, H, W), 0.2)
    depth[:, 4:12, 10:18] = 0.95  # a near block
    return image, depth


def _stereo(sn, image, depth, **over):
    return run_node(sn.Stereo360, image=image, depth=depth, **{**STEREO_DEFAULTS, **over})


def test_registered_with_tooltips(pack):
    for node_id in ("SDL3D_Stereo360", "SDL3D_StereoPack", "SDL3D_SaveStereo360", "SDL3D_SaveDepthMesh"):
        schema = pack.by_id[node_id].GET_SCHEMA()
        assert schema.description and schema.category.startswith("syncdiffusion-ldm3d/")
        assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)


def test_stereo_outputs_shapes_types_and_inputs_unchanged(sn):
    image, depth = _inputs()
    before = (image.clone(), depth.clone())
    stereo, left, right, lh, rh, ana, disp = _stereo(sn, image, depth, ipd_m=0.2, near_m=0.2)
    assert torch.equal(image, before[0]) and torch.equal(depth, before[1])
    assert stereo.shape == (2, 2 * H, W, 3) and left.shape == right.shape == image.shape
    assert lh.shape == rh.shape == (2, H, W) and lh.dtype == torch.float32
    assert ana.shape == image.shape and disp.shape == image.shape
    assert torch.equal(stereo[:, :H], left) and torch.equal(stereo[:, H:], right)
    assert torch.equal(ana[..., 0], left[..., 0]) and torch.equal(ana[..., 1:], right[..., 1:])
    assert lh.sum() > 0 and rh.sum() > 0 and not torch.equal(left, right)
    for t in (stereo, left, right, ana, disp):
        assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    # per-item batch: item 1 alone gives the same eyes
    s1 = _stereo(sn, image[1:], depth[1:], ipd_m=0.2, near_m=0.2)
    assert torch.equal(s1[1][0], left[1]) and torch.equal(s1[3][0], lh[1])


def test_depth_as_image_and_shared_depth_batch(sn):
    image, depth = _inputs()
    ref = _stereo(sn, image, depth)
    as_image = _stereo(sn, image, depth[..., None].expand(-1, -1, -1, 3).clone())
    assert torch.equal(ref[0], as_image[0])
    shared = _stereo(sn, image, depth[:1])
    assert torch.equal(ref[1], shared[1])


def test_zero_ipd_identity_and_constant_depth(sn):
    image, depth = _inputs(b=1)
    out = _stereo(sn, image, depth, ipd_m=0.0)
    assert torch.equal(out[1], image) and torch.equal(out[2], image) and out[3].sum() == 0
    const = _stereo(sn, image, torch.zeros(1, H, W), far_m=0.0)  # D = 0 at infinite far: no parallax
    assert torch.equal(const[1], image) and torch.equal(const[2], image)
    sbs = _stereo(sn, image, depth, layout="side_by_side", swap_eyes=True)
    assert sbs[0].shape == (1, H, 2 * W, 3) and torch.equal(sbs[0][:, :, :W], sbs[2])
    back = _stereo(sn, image, depth, warp="backward", supersample=2)
    assert back[3].sum() == 0 and back[1].shape == image.shape


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(depth=torch.rand(1, H, W + 2)), "depth"),
        (dict(image=torch.rand(1, H, H, 3), depth=torch.rand(1, H, H)), "2:1"),
        (dict(depth=torch.full((1, H, W), float("nan"))), "NaN"),
        (dict(depth=torch.full((1, H, W), float("inf"))), "NaN/inf"),
        (dict(ipd_m=-0.01), "ipd_m"),
        (dict(near_m=5.0, far_m=2.0), "far_m"),
        (dict(depth_mode="linear", far_m=0.0), "far_m"),
        (dict(depth_mode="sphere_displace", displacement_m=7.0), "displacement_m"),
        (dict(pole_fade_from_deg=80.0), "pole_fade_to_deg"),
        (dict(depth=torch.rand(3, H, W), image=torch.rand(2, H, W, 3)), "batch"),
    ],
)
def test_bad_inputs_raise_clear_errors(sn, change, match):
    image, depth = _inputs(b=1)
    args = {"image": image, "depth": depth, **STEREO_DEFAULTS, **change}
    with pytest.raises(ValueError, match=match) as info:
        run_node(sn.Stereo360, **args)
    assert str(info.value).startswith("Stereo 360 from RGB + Depth (ODS): input '") and "Fix:" in str(info.value)


def test_pack_eyes_node(so, sn):
    image, _ = _inputs()
    other = 1 - image
    (tb,) = run_node(so.StereoPack, left=image, right=other, layout="top_bottom", swap_eyes=True)
    assert torch.equal(tb[:, :H], other) and torch.equal(tb[:, H:], image)
    with pytest.raises(ValueError, match="shape"):
        run_node(so.StereoPack, left=image, right=other[:, :-1], layout="top_bottom", swap_eyes=False)


def test_save_stereo_suffix_folder_and_ui(so, comfy, sn):
    image, depth = _inputs()
    stereo = _stereo(sn, image, depth)[0]
    _, ui = run_node_ui(so.SaveStereo360, images=stereo, layout="auto", filename_prefix="sdl3d_test_vr/ods")
    files = ui.as_dict()["images"]
    out = comfy.folder_paths.get_output_directory()
    assert [f["filename"] for f in files] == ["ods_00001_360_TB.png", "ods_00002_360_TB.png"]
    assert all(f["subfolder"] == "sdl3d_test_vr" and f["type"] == "output" for f in files)
    assert all(os.path.isfile(os.path.join(out, "sdl3d_test_vr", f["filename"])) for f in files)
    _, ui = run_node_ui(so.SaveStereo360, images=stereo, layout="auto", filename_prefix="sdl3d_test_vr/ods")
    assert ui.as_dict()["images"][0]["filename"] == "ods_00003_360_TB.png"  # counter continues
    sbs = torch.cat([image, image], dim=2)
    _, ui = run_node_ui(so.SaveStereo360, images=sbs, layout="side_by_side", filename_prefix="sdl3d_test_vr/s")
    assert ui.as_dict()["images"][0]["filename"].endswith("_360_LR.png")
    with pytest.raises(ValueError, match="cannot tell"):
        run_node(so.SaveStereo360, images=image, layout="auto", filename_prefix="x")
    with pytest.raises(ValueError, match="outside"):
        run_node(so.SaveStereo360, images=stereo, layout="auto", filename_prefix="../escape/ods")


def _glb_doc(path):
    data = open(path, "rb").read()
    magic, version, total = struct.unpack_from("<III", data, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(data))
    jlen, _ = struct.unpack_from("<II", data, 12)
    return json.loads(data[20 : 20 + jlen])


def test_mesh_node_writes_formats_under_output(comfy, mn):
    image, depth = _inputs(b=1)
    before = (image.clone(), depth.clone())
    (model_file,), ui = run_node_ui(mn.SaveDepthMesh, image=image, depth=depth, **{**MESH_DEFAULTS, "format": "all"})
    assert torch.equal(image, before[0]) and torch.equal(depth, before[1])
    out = comfy.folder_paths.get_output_directory()
    assert model_file.endswith(".glb") and os.path.isfile(os.path.join(out, model_file))
    stem = os.path.join(out, model_file[:-4])
    for ext in (".obj", ".mtl", ".png", ".ply"):
        assert os.path.isfile(stem + ext), ext
    doc = _glb_doc(os.path.join(out, model_file))
    assert doc["accessors"][0]["count"] == 17 * 8
    assert max(doc["accessors"][0]["max"]) <= 6.0 + 1e-6  # sphere_displace: r <= radius
    assert ui["3d"][0]["type"] == "output"
    trimesh = pytest.importorskip("trimesh")  # an independent reader (test extra): the three formats agree
    meshes = [trimesh.load(os.path.join(out, model_file), force="mesh", process=False)]
    meshes += [trimesh.load(stem + ext, process=False) for ext in (".obj", ".ply")]
    for loaded in meshes:
        assert len(loaded.faces) == len(meshes[0].faces) > 0
        assert np.allclose(loaded.vertices[loaded.faces], meshes[0].vertices[meshes[0].faces], atol=2e-6)
        assert np.linalg.norm(loaded.vertices, axis=1).max() <= 6.0 + 1e-5


@pytest.mark.parametrize("prefix", ["../outside/mesh", "/tmp/sdl3d_abs/mesh", "a/../../b"])
def test_mesh_prefix_escaping_output_is_refused(comfy, mn, prefix):
    image, depth = _inputs(b=1)
    with pytest.raises(ValueError, match="outside ComfyUI's output folder"):
        run_node(mn.SaveDepthMesh, image=image, depth=depth, **{**MESH_DEFAULTS, "filename_prefix": prefix})
    assert not os.path.exists("/tmp/sdl3d_abs")


def test_mesh_bad_inputs(mn):
    image, depth = _inputs(b=1)
    with pytest.raises(ValueError, match="finite far"):
        run_node(mn.SaveDepthMesh, image=image, depth=depth, **{**MESH_DEFAULTS, "depth_mode": "inverse", "far_m": 0.0})
    with pytest.raises(ValueError, match="2:1"):
        run_node(mn.SaveDepthMesh, image=image[:, :, :H], depth=depth[:, :, :H], **MESH_DEFAULTS)
    assert math.isfinite(MESH_DEFAULTS["far_m"])


@pytest.mark.parametrize("name", ["stereo360_tb", "stereo360_mesh"])
def test_shipped_workflows_execute_in_process(comfy, pack, name):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "workflows" / "api" / f"{name}.api.json"
    graph = shrink_workflow(json.loads(path.read_text()))
    for spec in graph.values():  # every widget given, so the graph survives default changes
        cls = pack.by_id.get(spec["class_type"])
        if cls is not None:
            assert {i.id for i in cls.GET_SCHEMA().inputs} == set(spec["inputs"]), spec["class_type"]
    out = run_api_graph(pack, graph)
    if name == "stereo360_tb":
        stereo = out["3"][0]
        assert stereo.shape == (1, 512, 512, 3)
        assert out["3"][3].sum() > 0  # the pillars disocclude background in the left eye
    else:
        assert out["3"][0].endswith(".glb")
        assert os.path.isfile(os.path.join(comfy.folder_paths.get_output_directory(), out["3"][0]))


def test_mesh_single_formats_and_save_input_unchanged(so, comfy, mn, sn):
    image, depth = _inputs(b=1)
    out = comfy.folder_paths.get_output_directory()
    (ply,), _ = run_node_ui(
        mn.SaveDepthMesh,
        image=image,
        depth=depth,
        **{**MESH_DEFAULTS, "format": "ply", "filename_prefix": "sdl3d_test_mesh/only_ply"},
    )
    assert ply.endswith(".ply") and os.path.isfile(os.path.join(out, ply[:-4] + ".png"))
    head = open(os.path.join(out, ply), "rb").read(400)
    assert b"element vertex 136" in head and b"TextureFile" in head
    (obj,), _ = run_node_ui(
        mn.SaveDepthMesh, image=image, depth=depth, **{**MESH_DEFAULTS, "format": "obj", "cull_edges": True}
    )
    assert obj.endswith(".obj") and os.path.isfile(os.path.join(out, obj[:-4] + ".mtl"))
    stereo = torch.rand(1, 2 * H, W, 3)
    before = stereo.clone()
    run_node_ui(so.SaveStereo360, images=stereo, layout="top_bottom", filename_prefix="sdl3d_test_vr/keep")
    assert torch.equal(stereo, before)


def test_every_shipped_workflow_uses_current_stereo_and_mesh_inputs(pack):
    from pathlib import Path

    mine = ("SDL3D_Stereo360", "SDL3D_StereoPack", "SDL3D_SaveStereo360", "SDL3D_SaveDepthMesh")
    seen = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "workflows" / "api").glob("*.api.json")):
        for node_id, spec in json.loads(path.read_text()).items():
            if spec["class_type"] in mine:
                expected = {i.id for i in pack.by_id[spec["class_type"]].GET_SCHEMA().inputs}
                assert set(spec["inputs"]) == expected, f"{path.name} node {node_id}"
                seen += 1
    assert seen >= 4
