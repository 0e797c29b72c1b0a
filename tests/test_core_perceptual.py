"""sync_core.perceptual: offline LPIPS from torchvision-format backbone files (pure torch, no ComfyUI)."""

import importlib.util
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from sync_core.perceptual import (
    BACKBONE_FILES,
    LPIPSWeightsMissing,
    build_lpips,
    find_backbone_weights,
    make_perceptual,
)

REPO = Path(__file__).resolve().parents[1]
LPIPS_PKG_WEIGHTS = Path(lpips.__file__).parent / "weights" / "v0.1"


def _fixtures_module():
    spec = importlib.util.spec_from_file_location(
        "sdl3d_sync_fixtures", REPO / "tests" / "fixtures" / "sync_fixtures.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    """torch hub cache pointed at an empty folder (the real one might hold real weights)."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _oracle_lpips(net, backbone_sd, a, b):
    """Plain LPIPS v0.1: torchvision trunk + the package's linear heads, written out here."""
    if net == "vgg":
        trunk, taps = torchvision.models.vgg16(weights=None).features, [3, 8, 15, 22, 29]
    else:
        trunk, taps = torchvision.models.alexnet(weights=None).features, [1, 4, 7, 9, 11]
    trunk.load_state_dict({k[len("features.") :]: v for k, v in backbone_sd.items() if k.startswith("features.")})
    heads = torch.load(LPIPS_PKG_WEIGHTS / f"{net}.pth", map_location="cpu", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def feats(x):
        x = (x - shift) / scale
        out = []
        for i, layer in enumerate(trunk):
            x = layer(x)
            if i in taps:
                out.append(x)
            if i == taps[-1]:
                break
        return out

    total = 0
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = heads[f"lin{k}.model.1.weight"]
        total = total + torch.nn.functional.conv2d((na - nb) ** 2, w).mean(dim=(2, 3), keepdim=True)
    return total


def test_fixture_files_are_torchvision_format_and_deterministic(lpips_dir, tmp_path):
    mod = _fixtures_module()
    for net, name in BACKBONE_FILES.items():
        sd = torch.load(lpips_dir / name, map_location="cpu", weights_only=True)
        model = (torchvision.models.vgg16 if net == "vgg" else torchvision.models.alexnet)(weights=None)
        model.features.load_state_dict({k[len("features.") :]: v for k, v in sd.items()})  # strict: all keys match
    mod.build_sync_fixtures(tmp_path)
    a = torch.load(tmp_path / "lpips" / BACKBONE_FILES["alex"], weights_only=True)
    mtime = (tmp_path / "lpips" / BACKBONE_FILES["alex"]).stat().st_mtime_ns
    mod.build_sync_fixtures(tmp_path)  # kept, not rewritten
    assert (tmp_path / "lpips" / BACKBONE_FILES["alex"]).stat().st_mtime_ns == mtime
    b = torch.load(lpips_dir / BACKBONE_FILES["alex"], weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("net,size", [("vgg", 32), ("alex", 64)])
def test_build_lpips_matches_plain_oracle(lpips_dir, empty_hub, net, size):
    model = build_lpips(net, search_dirs=[str(lpips_dir)])
    assert isinstance(model, lpips.LPIPS) and not model.training
    assert not any(p.requires_grad for p in model.parameters())
    sd = torch.load(lpips_dir / BACKBONE_FILES[net], map_location="cpu", weights_only=True)
    assert torch.equal(model.net.slice1[0].weight, sd["features.0.weight"])
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    b = torch.rand(2, 3, size, size, generator=g) * 2 - 1
    a_before = a.clone()
    got = model(a, b)
    assert got.shape == (2, 1, 1, 1)
    with torch.no_grad():
        want = _oracle_lpips(net, sd, a, b)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert bool((got > 0).all())
    assert model(a, a).abs().max() < 1e-6
    assert torch.equal(a, a_before)
    # make_perceptual: [N] float, optional resize
    per = make_perceptual(model)
    torch.testing.assert_close(per(a, b), got.reshape(2))
    small = make_perceptual(model, resolution=size // 2)
    assert small(a, b).shape == (2,) and not torch.allclose(small(a, b), got.reshape(2))


def test_state_dict_and_path_inputs(lpips_dir, empty_hub):
    sd = torch.load(lpips_dir / BACKBONE_FILES["alex"], weights_only=True)
    m1 = build_lpips("alexnet", backbone_state_dict={"module." + k: v for k, v in sd.items()})
    m2 = build_lpips("alex", backbone_path=str(lpips_dir / BACKBONE_FILES["alex"]))
    assert torch.equal(m1.net.slice5._modules["10"].weight, m2.net.slice5._modules["10"].weight)
    assert torch.equal(m2.net.slice5._modules["10"].weight, sd["features.10.weight"])
    with pytest.raises(ValueError, match="not a torchvision"):
        build_lpips("vgg", backbone_state_dict=sd)  # AlexNet weights for VGG
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        build_lpips("squeeze", backbone_state_dict=sd)
    with pytest.raises(LPIPSWeightsMissing, match="does not exist"):
        build_lpips("vgg", backbone_path=str(lpips_dir / "nope.pth"))


def test_missing_weights_offline_names_file_and_folders(tmp_path, empty_hub):
    a, b = tmp_path / "models" / "lpips", tmp_path / "elsewhere"
    a.mkdir(parents=True)
    for net, name in BACKBONE_FILES.items():
        with pytest.raises(LPIPSWeightsMissing) as info:
            build_lpips(net, search_dirs=[str(a), str(b)])
        msg = str(info.value)
        assert name in msg and str(a) in msg and str(b) in msg and str(empty_hub / "checkpoints") in msg
        assert "Put" in msg
        assert isinstance(info.value, FileNotFoundError)


def test_find_order_and_hub_fallback(tmp_path, empty_hub, lpips_dir):
    first, second = tmp_path / "first", tmp_path / "second"
    for d in (first, second, empty_hub / "checkpoints"):
        d.mkdir(parents=True)
    name = BACKBONE_FILES["vgg"]
    assert find_backbone_weights("vgg", [str(first)]) is None
    (empty_hub / "checkpoints" / name).write_bytes(b"x")
    assert find_backbone_weights("vgg", [str(first)]) == str(empty_hub / "checkpoints" / name)
    (second / name).write_bytes(b"x")
    assert find_backbone_weights("vgg", [str(first), str(second)]) == str(second / name)
    (first / name).write_bytes(b"x")
    assert find_backbone_weights("vgg16", [str(first), str(second)]) == str(first / name)
    assert find_backbone_weights("alex", [str(first), str(second)]) is None


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_prepared_anchor_features_and_checkpointed_lpips_equal_lpips_forward(lpips_dir, empty_hub, net):
    """The split form (anchor features once, many images against them) and its checkpointed gradient equal the
    lpips package's own forward and plain autograd."""
    model = build_lpips(net, search_dirs=[str(lpips_dir)])
    g = torch.Generator().manual_seed(3)
    images = torch.rand(6, 3, 48, 48, generator=g) * 2 - 1
    anchor = torch.rand(2, 3, 48, 48, generator=g) * 2 - 1
    per = make_perceptual(model)
    target = per.prepare(anchor)
    stacked_anchor = anchor.repeat(3, 1, 1, 1)  # view-major stacks: 3 views x batch 2
    want = model(images, stacked_anchor).reshape(6)
    torch.testing.assert_close(per.compare(images, target), want, rtol=1e-5, atol=1e-7)

    def grad_of(loss_fn):
        x = images.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(x).sum(), x)
        return grad

    plain = grad_of(lambda x: model(x, stacked_anchor))
    ckpt = make_perceptual(model, checkpoint=True)
    torch.testing.assert_close(grad_of(lambda x: ckpt.compare(x, ckpt.prepare(anchor))), plain, rtol=1e-4, atol=1e-8)
    assert plain.abs().max() > 0
