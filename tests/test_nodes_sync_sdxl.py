"""SyncDiffusion on an SDXL-shaped model (real comfy.model_base.SDXL, tiny random UNet): per-view size conditioning.

SDXL's `y` = [pooled text (1280) | sinusoidal embeddings (256 each) of height, width, crop_h, crop_w, target_height,
target_width]. Each view is denoised as an image of the view's size (crop 0), so the oracle below rebuilds `y` from
the closed-form embedding and checks every UNet call against it.
"""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from model_fixtures import empty_latent, stock_ksampler, sync_ksampler

from comfy_harness import run_node, stock_node

POOLED, EMB = 1280, 256
# num_head_channels: ComfyUI forces 64 for SDXL configs (unet_extra_config)
TINY_SDXL_UNET = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    model_channels=64,
    num_res_blocks=[1],
    channel_mult=[1],
    num_head_channels=64,
    use_spatial_transformer=True,
    transformer_depth=[1],
    transformer_depth_output=[1, 1],
    transformer_depth_middle=1,
    context_dim=2048,
    use_linear_in_transformer=True,
    legacy=False,
    num_classes="sequential",
    adm_in_channels=2816,
    use_temporal_attention=False,
)


def sinusoid(value: float, dim: int = EMB) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    return torch.cat([torch.cos(value * freqs), torch.sin(value * freqs)])


def expected_size_embedding(height_px: int, width_px: int) -> torch.Tensor:
    return torch.cat([sinusoid(v) for v in (height_px, width_px, 0, 0, height_px, width_px)])


@pytest.fixture(scope="module")
def sdxl(comfy):
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    spec = importlib.util.spec_from_file_location(
        "sdl3d_fixture_build_sdxl", Path(__file__).with_name("fixtures") / "build.py"
    )
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    def unet_config():
        return {k: (list(v) if isinstance(v, list) else v) for k, v in TINY_SDXL_UNET.items()}  # UNetModel pops lists

    torch.manual_seed(21)
    weights = build.randomize(UNetModel(**unet_config(), operations=comfy.ops.disable_weight_init)).state_dict()
    model = comfy.supported_models.SDXL(unet_config()).get_model({})
    model.load_model_weights(weights)
    device = comfy.model_management.get_torch_device()
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    g = torch.Generator().manual_seed(5)

    def conditioning():
        return [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, POOLED, generator=g)}]]

    (vae,) = run_node(stock_node("VAELoader"), vae_name="taesd")
    return dict(model=patcher, positive=conditioning(), negative=conditioning(), vae=vae)


def recording(model):
    """A clone of `model` whose UNet calls record (latent width, y) through ComfyUI's unet wrapper."""
    calls = []

    def wrapper(apply_model, args):
        calls.append((args["input"].shape[-1], args["c"]["y"].detach().clone()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    clone = model.clone()
    clone.set_model_unet_function_wrapper(wrapper)
    return clone, calls


def test_each_view_gets_its_own_size_conditioning(pack, sdxl, lpips_alex):
    model, calls = recording(sdxl["model"])
    out = sync_ksampler(
        pack,
        {**sdxl, "model": model},
        empty_latent(8, 24),
        window=64,
        stride=32,
        steps=2,
        sync_weight=20.0,
        sync_steps=2,
        lpips=lpips_alex,
    )
    assert torch.isfinite(out).all()
    view_size = expected_size_embedding(64, 64)
    pooled = {tuple(c[0][1]["pooled_output"][0, :4].tolist()) for c in (sdxl["positive"], sdxl["negative"])}
    assert calls and {width for width, _ in calls} == {8}  # only views reach the UNet, never the 24-wide canvas
    for _, y in calls:
        assert y.shape[-1] == POOLED + 6 * EMB
        assert torch.allclose(y[:, POOLED:], view_size.expand(y.shape[0], -1), atol=1e-5)
        assert {tuple(row[:4].tolist()) for row in y[:, :POOLED]} <= pooled


def test_one_full_view_without_sync_equals_stock_ksampler(pack, sdxl):
    square = empty_latent(8, 8)
    ours = sync_ksampler(pack, sdxl, square, window=64, stride=64)
    assert torch.allclose(ours, stock_ksampler(sdxl, square), atol=1e-6)


def test_size_conditioning_set_in_the_prompt_is_kept(pack, sdxl):
    sizes = dict(width=4096, height=1024, crop_w=0, crop_h=0, target_width=4096, target_height=1024)
    positive = [[sdxl["positive"][0][0], {**sdxl["positive"][0][1], **sizes}]]
    model, calls = recording(sdxl["model"])
    sync_ksampler(
        pack, {**sdxl, "model": model, "positive": positive}, empty_latent(8, 16), window=64, stride=32, steps=1
    )
    prompt_size = torch.cat([sinusoid(v) for v in (1024, 4096, 0, 0, 1024, 4096)])
    rows = torch.cat([y for _, y in calls])
    kept = torch.isclose(rows[:, POOLED:], prompt_size, atol=1e-5).all(dim=1)
    per_view = torch.isclose(rows[:, POOLED:], expected_size_embedding(64, 64), atol=1e-5).all(dim=1)
    assert kept.any() and per_view.any() and (kept | per_view).all()  # positive keeps its size, negative per view
