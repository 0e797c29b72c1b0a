"""What users see of the nodes in ComfyUI: output names, categories, loader lists, messages, reported files.

In-process on real ComfyUI (the browser tests in tests/browser/ check the same things in the real frontend).
"""

from __future__ import annotations

import os

import pytest
import torch

from comfy_harness import run_node, run_node_ui


def test_every_output_of_every_node_has_a_display_name(pack):
    for node_id, cls in pack.by_id.items():
        schema = cls.GET_SCHEMA()
        names = [o.display_name for o in schema.outputs]
        assert all(names), f"{node_id}: unnamed outputs {names}"
        assert len(set(names)) == len(names), f"{node_id}: duplicate output names {names}"
        assert cls.GET_NODE_INFO_V1()["output_name"] == names, node_id


def test_loaders_sit_under_the_pack_loaders_category(pack):
    for node_id in ("SDL3D_LPIPSLoader", "SDL3D_LDM3DLoader"):
        assert pack.by_id[node_id].GET_SCHEMA().category == "syncdiffusion-ldm3d/loaders", node_id


def test_lpips_loader_error_names_the_widget_and_gives_the_fix_once(pack, comfy, monkeypatch, tmp_path):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "lpips", ([str(tmp_path)], {".pth"}))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(ValueError) as err:
        run_node(pack.by_id["SDL3D_LPIPSLoader"], net="alex", resolution=0)
    message = str(err.value)
    assert "input 'net' = 'alex'" in message and "input 'lpips'" not in message
    assert message.count("Fix:") == 1 and message.count("Put ") == 0, message
    assert "alexnet-owt-7be5be79.pth" in message and str(tmp_path) not in message, "no server path"
    assert "into the 'lpips' folder set in extra_model_paths.yaml" in message, message


def test_ldm3d_loader_lists_only_ldm3d_models(pack, comfy, tmp_path):
    model_files = pack.node_module("ldm3d.model_files")
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    (ckpts / "ldm3d_single.safetensors").symlink_to(comfy.models / "ldm3d" / "ldm3d-single-6c.safetensors")
    (ckpts / "plain_sd15.safetensors").symlink_to(comfy.models / "checkpoints" / "sdl3d_tiny_sd15.safetensors")
    (ckpts / "not_a_model.ckpt").write_bytes(b"\0" * 16)
    paths = comfy.folder_paths.folder_names_and_paths["checkpoints"][0]
    paths.append(str(ckpts))
    comfy.folder_paths.filename_list_cache.clear()
    try:
        names = model_files.list_models()
    finally:
        paths.remove(str(ckpts))
        comfy.folder_paths.filename_list_cache.clear()
    assert "checkpoints/ldm3d_single.safetensors" in names
    assert "checkpoints/plain_sd15.safetensors" not in names and "checkpoints/sdl3d_tiny_sd15.safetensors" not in names
    assert not any(n.endswith(".ckpt") for n in names)
    assert {"ldm3d", "ldm3d-4c", "ldm3d-pano"} <= set(names)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ldm3d-pano-v2", "Intel/ldm3d-pano-v2 diffusers folder"),
        ("diffusers/ldm3d-sr-x", "ComfyUI/models/diffusers/ldm3d-sr-x"),
        ("my_rgbd.safetensors", "checkpoint file 'my_rgbd.safetensors'"),
    ],
)
def test_missing_ldm3d_model_message_names_that_model(pack, name, expected):
    with pytest.raises(ValueError) as err:
        run_node(pack.by_id["SDL3D_LDM3DLoader"], model_name=name)
    message = str(err.value)
    assert expected in message and message.count("Fix:") == 1, message
    if "ldm3d-4c" not in name:
        assert "ldm3d-4c" not in message, message


def test_error_type_reads_as_a_name_not_a_path(pack):
    from execution import full_type_name

    with pytest.raises(ValueError) as err:
        run_node(pack.by_id["SDL3D_LDM3DLoader"], model_name="nope")
    shown = full_type_name(type(err.value))
    assert shown == "syncdiffusion_ldm3d.NodeInputError" and os.sep not in shown


def test_mesh_all_format_reports_every_written_file(pack, comfy):
    h, w = 8, 16
    image = torch.rand(1, h, w, 3)
    depth = torch.rand(1, h, w) * 0.8 + 0.1
    (model_file,), ui = run_node_ui(
        pack.by_id["SDL3D_SaveDepthMesh"],
        image=image,
        depth=depth,
        format="all",
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
        filename_prefix="ui_test/m",
    )
    reported = [item for values in ui.values() for item in values]
    names = sorted(os.path.splitext(item["filename"])[1] for item in reported)
    assert names == [".glb", ".mtl", ".obj", ".ply", ".png"], reported
    out = comfy.folder_paths.get_output_directory()
    for item in reported:
        assert os.path.isfile(os.path.join(out, item["subfolder"], item["filename"])), item
    assert ui["images"][0]["filename"].endswith(".png") and model_file.endswith(".glb")
