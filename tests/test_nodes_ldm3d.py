"""LDM3D nodes in-process on real ComfyUI with the random-weight fixtures (tests/fixtures/ldm3d_fixtures.py).

Oracles: diffusers' own AutoencoderKL / UNet2DConditionModel loaded from the same fixture folders (an
independent implementation), and the LDM3D formulas written out here.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch

from comfy_harness import run_api_graph, run_node, stock_node
from workflow_overrides import shrink_workflow


@pytest.fixture(scope="module")
def unet(pack):
    return pack.node_module("ldm3d.unet")


def test_loader_lists_and_reads_channels_from_weights(ln, loaded):
    options = ln.LDM3DLoader.GET_SCHEMA().inputs[0].options
    for name in ("ldm3d", "ldm3d-4c", "ldm3d-sr", "ldm3d-single-6c.safetensors"):
        assert name in options
    for name, channels in (("ldm3d", 6), ("ldm3d-4c", 4), ("ldm3d-sr", 4), ("ldm3d-single-6c.safetensors", 6)):
        model, clip, vae, info = loaded(name)
        assert vae.ldm3d_channels == channels and f"vae_channels={channels}" in info
        assert "prediction_type=epsilon" in info and "scaling_factor=0.18215" in info
    assert "scheduler=PNDMScheduler" in loaded("ldm3d")[3]


def test_renamed_models_still_load_right(comfy, ln, tmp_path):
    """Names lie: a 6-channel single file called ldm3d-4c and a 4-channel folder called ldm3d-6ch."""
    src = comfy.models / "ldm3d"
    os.link(src / "ldm3d-single-6c.safetensors", tmp_path / "renamed-ldm3d-4c.safetensors")
    (tmp_path / "renamed-ldm3d-6ch").symlink_to(src / "ldm3d-4c", target_is_directory=True)
    diffusers_dir = tmp_path / "diffusers_models"
    diffusers_dir.mkdir()
    (diffusers_dir / "Intel-ldm3d").symlink_to(src / "ldm3d", target_is_directory=True)
    v_pred = tmp_path / "ldm3d-vpred"
    v_pred.mkdir()
    for item in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer"):
        (v_pred / item).symlink_to(src / "ldm3d-4c" / item)
    (v_pred / "scheduler").mkdir()
    sched = json.loads((src / "ldm3d-4c" / "scheduler" / "scheduler_config.json").read_text())
    (v_pred / "scheduler" / "scheduler_config.json").write_text(json.dumps(dict(sched, prediction_type="v_prediction")))
    paths = comfy.folder_paths.folder_names_and_paths["ldm3d"][0]
    paths.append(str(tmp_path))
    had_diffusers = "diffusers" in comfy.folder_paths.folder_names_and_paths
    comfy.folder_paths.add_model_folder_path("diffusers", str(diffusers_dir))
    try:
        assert run_node(ln.LDM3DLoader, model_name="renamed-ldm3d-4c.safetensors")[2].ldm3d_channels == 6
        assert run_node(ln.LDM3DLoader, model_name="renamed-ldm3d-6ch")[2].ldm3d_channels == 4
        assert "diffusers/Intel-ldm3d" in ln.LDM3DLoader.GET_SCHEMA().inputs[0].options
        assert run_node(ln.LDM3DLoader, model_name="diffusers/Intel-ldm3d")[2].ldm3d_channels == 6
        model, _, _, info = run_node(ln.LDM3DLoader, model_name="ldm3d-vpred")
        assert "prediction_type=v_prediction" in info
        assert model.model.model_type == importlib.import_module("comfy.model_base").ModelType.V_PREDICTION
    finally:
        paths.remove(str(tmp_path))
        comfy.folder_paths.folder_names_and_paths["diffusers"][0].remove(str(diffusers_dir))
        if not had_diffusers:
            del comfy.folder_paths.folder_names_and_paths["diffusers"]


def test_loader_errors(comfy, ln, tmp_path):
    src = comfy.models / "ldm3d" / "ldm3d-4c"
    broken = tmp_path / "ldm3d-broken"
    broken.mkdir()
    for item in ("model_index.json", "unet", "text_encoder", "scheduler", "tokenizer"):  # no vae/
        (broken / item).symlink_to(src / item)
    paths = comfy.folder_paths.folder_names_and_paths["ldm3d"][0]
    paths.append(str(tmp_path))
    try:
        with pytest.raises(
            ValueError,
            match=r"LDM3D Loader: input 'model_name' = 'ldm3d-broken'.*lacks the "
            r"'vae/' component.*Fix:",
        ):
            run_node(ln.LDM3DLoader, model_name="ldm3d-broken")
        with pytest.raises(ValueError, match=r"LDM3D Loader: input 'model_name' = 'nope'.*no LDM3D model"):
            run_node(ln.LDM3DLoader, model_name="nope")
    finally:
        paths.remove(str(tmp_path))
    with pytest.raises(ValueError, match="checkpoints/sdl3d_tiny_sd15.safetensors.*Fix:"):
        run_node(ln.LDM3DLoader, model_name="checkpoints/sdl3d_tiny_sd15.safetensors")  # SD1.5, no LDM3D VAE


def test_full_size_unet_config_matches_comfy_sd15_table(unet):
    """Intel/ldm3d's UNet config.json is SD1.x; the derived config must equal ComfyUI's own SD15 table."""
    intel = {
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "in_channels": 4,
        "layers_per_block": 2,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    got = unet.unet_config_from_diffusers(intel)
    sd15 = {
        "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": 768,
        "num_heads": 8,
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "in_channels": 4,
        "out_channels": 4,
        "adm_in_channels": None,
    }  # comfy/model_detection.py SD15 entry
    assert {k: got[k] for k in sd15} == sd15
    with pytest.raises(unet.LDM3DLoadError, match="cross_attention_dim 1024"):
        unet.unet_config_from_diffusers(dict(intel, cross_attention_dim=1024))


def test_scheduler_config_is_read_and_unknown_refused(unet):
    settings, _, pred = unet.sampling_from_scheduler(
        {"prediction_type": "v_prediction", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
    )
    assert pred == "v_prediction" and settings["beta_schedule"] == "sqrt_linear" and settings["linear_end"] == 0.02
    with pytest.raises(unet.LDM3DLoadError, match="prediction_type 'sample'"):
        unet.sampling_from_scheduler({"prediction_type": "sample"})
    with pytest.raises(unet.LDM3DLoadError, match="beta_schedule 'exotic'"):
        unet.sampling_from_scheduler({"beta_schedule": "exotic"})


def test_unet_matches_diffusers_unet(comfy, loaded):
    """Key mapping + config derivation: ComfyUI's UNet == diffusers' UNet2DConditionModel on the same weights."""
    from diffusers import UNet2DConditionModel

    for name in ("ldm3d-4c", "ldm3d-sr"):
        model = loaded(name)[0]
        ref = UNet2DConditionModel.from_pretrained(str(comfy.models / "ldm3d" / name / "unet")).float().eval()
        g = torch.Generator().manual_seed(11)
        x = torch.randn(2, ref.config.in_channels, 8, 8, generator=g)
        ctx = torch.randn(2, 77, 768, generator=g)
        t = torch.tensor([10.0, 500.0])
        kwargs, ckw = {}, {}
        if name == "ldm3d-sr":
            labels = torch.tensor([20, 350])
            kwargs["class_labels"], ckw["y"] = labels, labels
        with torch.no_grad():
            want = ref(x, t, encoder_hidden_states=ctx, **kwargs).sample
            unet = model.model.diffusion_model
            got = unet(x.to(unet.dtype), t, context=ctx.to(unet.dtype), **ckw).float()
        assert torch.allclose(got, want, atol=2e-3, rtol=1e-3), (name, (got - want).abs().max())


def test_sr_conditioning_composes_with_ksampler(ln, loaded):
    model, clip, vae, info = loaded("ldm3d-sr")
    assert "unet_in_channels=8" in info and "max_noise_level=350" in info
    (pos,) = run_node(stock_node("CLIPTextEncode"), text="a room", clip=clip)
    (neg,) = run_node(stock_node("CLIPTextEncode"), text="", clip=clip)
    g = torch.Generator().manual_seed(2)
    image, depth = torch.rand(1, 16, 32, 3, generator=g), torch.rand(1, 16, 32, generator=g)
    pos_before = [[pos[0][0].clone(), dict(pos[0][1])]]
    p2, n2, empty = run_node(
        ln.LDM3DUpscaleConditioning,
        positive=pos,
        negative=neg,
        vae=vae,
        image=image,
        depth=depth,
        width=64,
        height=32,
        noise_level=20,
    )
    assert pos[0][1].keys() == pos_before[0][1].keys()  # input conditioning untouched
    assert empty["samples"].shape == (1, 4, 4, 8) and p2[0][1]["ldm3d_noise_level"] == 20

    def sample(p, n):
        return run_node(
            stock_node("KSampler"),
            model=model,
            seed=3,
            steps=2,
            cfg=4.0,
            sampler_name="euler",
            scheduler="normal",
            positive=p,
            negative=n,
            latent_image=empty,
            denoise=1.0,
        )[0]["samples"]

    a = sample(p2, n2)
    p3, n3, _ = run_node(
        ln.LDM3DUpscaleConditioning,
        positive=pos,
        negative=neg,
        vae=vae,
        image=1 - image,
        depth=depth,
        width=64,
        height=32,
        noise_level=20,
    )
    p4, n4, _ = run_node(
        ln.LDM3DUpscaleConditioning,
        positive=pos,
        negative=neg,
        vae=vae,
        image=image,
        depth=depth,
        width=64,
        height=32,
        noise_level=300,
    )
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, sample(p3, n3), atol=1e-4)  # the low-res image reaches the UNet
    assert not torch.allclose(a, sample(p4, n4), atol=1e-4)  # so does the noise level (class label)
    with pytest.raises(Exception, match="LDM3D Upscale Conditioning"):
        sample(pos, neg)
    p5, n5 = ([[c[0], {**c[1], "ldm3d_noise_level": 1000}] for c in conds] for conds in (p2, n2))  # hand-built
    with pytest.raises(Exception, match="noise_level 1000 is outside"):
        run_node(
            stock_node("KSampler"),
            model=model,
            seed=3,
            steps=1,
            cfg=4.0,
            sampler_name="euler",
            scheduler="normal",
            positive=p5,
            negative=n5,
            latent_image=empty,
            denoise=1.0,
        )


@pytest.mark.parametrize("workflow", ["ldm3d_txt2rgbd.api.json", "ldm3d_pano_rgbd.api.json"])
def test_shipped_workflow_runs_and_saves_rgb_and_16bit_depth(comfy, pack, workflow):
    from PIL import Image

    shipped = Path(__file__).resolve().parents[1] / "workflows" / "api" / workflow
    graph = shrink_workflow(json.loads(shipped.read_text()))
    out_dir = Path(comfy.folder_paths.get_output_directory())
    before = set(out_dir.rglob("*.png"))
    outputs = run_api_graph(pack, graph)
    image, depth, _ = outputs["6"]
    width, height = graph["4"]["inputs"]["width"], graph["4"]["inputs"]["height"]
    assert image.shape == (1, height, width, 3) and depth.shape == (1, height, width)
    new = sorted(set(out_dir.rglob("*.png")) - before)
    depth_files = [p for p in new if "depth16" in p.name]
    rgb_files = [p for p in new if "_rgb" in p.name]
    assert len(depth_files) == 1 and len(rgb_files) == 1
    with Image.open(depth_files[0]) as im:
        assert im.mode.startswith("I") and im.size == (width, height)
        import numpy as np

        codes = np.array(im).astype(np.int64)
    assert np.array_equal(codes, torch.round(depth[0].double() * 65535).long().numpy())
