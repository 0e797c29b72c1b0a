"""SyncDiffusion Coherence node in real ComfyUI (in-process), against tests/oracles/coherence_metrics.py."""

from __future__ import annotations

import pytest
import torch
from oracles.coherence_metrics import plain_intra_lpips, plain_intra_style

from comfy_harness import run_node_ui

NODE_ID = "SDL3D_SyncDiffusionCoherence"


@pytest.fixture(scope="module")
def node(pack):
    return pack.by_id[NODE_ID]


@pytest.fixture(scope="module")
def backbones(pack, comfy):
    lpips_choice = pack.nodes.sync.ksampler_nodes.load_lpips("test", "vgg")
    vgg19 = torch.load(comfy.models / "lpips" / "vgg19-dcbb9e9d.pth", map_location="cpu", weights_only=True)
    return lpips_choice, vgg19


def _as_image(bchw: torch.Tensor) -> torch.Tensor:
    return bchw.movedim(1, -1).contiguous()  # ComfyUI IMAGE [B, H, W, C]


def test_node_matches_plain_metrics_and_compares(node, backbones):
    lpips_choice, vgg19 = backbones
    g = torch.Generator().manual_seed(5)
    tile = torch.rand(1, 3, 32, 32, generator=g)
    coherent = tile.repeat(1, 1, 1, 3) + 0.02 * torch.rand(1, 3, 32, 96, generator=g)  # 3 near-identical crops
    noisy = torch.rand(2, 3, 32, 100, generator=g)  # 3 crops + 4 px remainder, a batch of 2
    image, compare = _as_image(coherent.clamp(0, 1)), _as_image(noisy)
    image_before, compare_before = image.clone(), compare.clone()
    (lp, st, report), ui = run_node_ui(node, image=image, crop_size=32, compare=compare)
    assert torch.equal(image, image_before) and torch.equal(compare, compare_before)
    want_lp, _ = plain_intra_lpips(lpips_choice.model, coherent.clamp(0, 1), 32)
    want_st, _ = plain_intra_style(vgg19, coherent.clamp(0, 1), 32)
    assert isinstance(lp, float) and isinstance(st, float)
    assert lp == pytest.approx(want_lp, rel=1e-5) and st == pytest.approx(want_st, rel=1e-4)
    cmp_lp, cmp_each = plain_intra_lpips(lpips_choice.model, noisy, 32)
    assert f"{cmp_lp:.4f}" in report and f"{cmp_each[1]:.4f}" in report
    assert "image is more coherent on both metrics" in report  # near-identical crops vs independent noise
    assert f"{lp:.4f}" in report and "3 crops, mean of 3 pairs" in report and "sum of 3 pairs" in report
    assert ui.as_dict() == {"text": (report,)}  # what the executor sends to the frontend
    # without compare, with an explicit LPIPS: the same numbers for 'image'
    (lp2, st2, report2), _ = run_node_ui(node, image=image, crop_size=32, lpips=lpips_choice)
    assert (lp2, st2) == (lp, st) and "compare" not in report2


def test_node_schema_and_registration(pack, node):
    schema = node.GET_SCHEMA()
    assert schema.display_name == "SyncDiffusion Coherence"
    assert [o.display_name for o in schema.outputs] == ["intra_lpips", "intra_style", "report"]
    assert {i.id for i in schema.inputs} == {"image", "crop_size", "compare", "lpips"}
    assert NODE_ID in {cls.GET_SCHEMA().node_id for cls in pack.node_classes}


@pytest.mark.parametrize(
    "name,shape,crop,match",
    [
        (
            "image",
            (1, 30, 200, 3),
            32,
            r"input 'image' = tensor\(1, 30, 200, 3\).*smaller than one 32x32 crop.*Fix: lower "
            "crop_size to <= 30",
        ),
        (
            "image",
            (1, 32, 60, 3),
            32,
            r"input 'image'.*holds only 1 non-overlapping 32x32 crop.*Fix: evaluate a "
            "panorama at least 64 px",
        ),
        ("image", (1, 64, 64, 3), 32, r"input 'image'.*Intra-Style-L resizes the shorter side.*1 crop.*Fix: .*2:1"),
        ("compare", (1, 32, 40, 3), 32, r"input 'compare'.*holds only 1"),
        ("image", (1, 32, 96, 4), 32, r"input 'image'.*expected 3 channels"),
    ],
)
def test_bad_inputs_name_node_input_value_fix(node, name, shape, crop, match):
    from comfy_harness import run_node

    good = torch.rand(1, 32, 96, 3)
    inputs = {"image": good, "compare": good, "crop_size": crop}
    inputs[name] = torch.rand(*shape)
    with pytest.raises(ValueError, match=match) as info:
        run_node(node, **inputs)
    assert str(info.value).startswith("SyncDiffusion Coherence: ")


def test_missing_vgg19_names_file_and_folder(node, comfy, tmp_path, monkeypatch):
    """The folder relative to ComfyUI's models directory, once; no server path, no repeated sentence."""
    folder = tmp_path / "models" / "lpips"
    folder.mkdir(parents=True)
    _, exts = comfy.folder_paths.folder_names_and_paths["lpips"]
    monkeypatch.setattr(comfy.folder_paths, "models_dir", str(tmp_path / "models"))
    monkeypatch.setitem(comfy.folder_paths.folder_names_and_paths, "lpips", ([str(folder)], exts))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    (folder / "vgg16-397923af.pth").symlink_to(comfy.models / "lpips" / "vgg16-397923af.pth")
    with pytest.raises(
        ValueError,
        match=r"SyncDiffusion Coherence: Intra-Style-L needs .*vgg19-dcbb9e9d\.pth.*Fix: "
        r"put 'vgg19-dcbb9e9d\.pth' into ComfyUI's models/lpips \(",
    ) as err:
        run_node_ui(node, image=torch.rand(1, 32, 96, 3), crop_size=32)
    message = str(err.value)
    assert str(tmp_path) not in message and message.count("models/lpips") == 1, message
    assert message.count("Intra-Style-L needs") == 1, message


def test_node_is_interruptible(node):
    import comfy.model_management as mm

    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run_node_ui(node, image=torch.rand(1, 32, 96, 3), crop_size=32)
        assert not mm.processing_interrupted()  # the check consumed the flag, as in ComfyUI's executor
    finally:
        mm.interrupt_current_processing(False)
