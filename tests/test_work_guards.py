"""In-process checks of the guards of issue 24 that the API suite cannot see from outside: VAE Decode (360 / Tiled)
and VAE Encode (Tiled) switching to tiles that fit, the tile / view / pair limits and their environment variables,
the Model Patch lowering a view batch that does not fit, the SyncDiffusion memory budget capped at the limit, and
Coherence refusing too many crop pairs before it loads anything (nodes/shared/memory_guards.py)."""

from __future__ import annotations

import logging

import pytest
import torch
from model_fixtures import empty_latent

from comfy_harness import run_node, run_node_ui, stock_node

CKPT = "sdl3d_tiny_sd15.safetensors"
DECODE_ID, ENCODE_ID = "SDL3D_VAEDecode360", "SDL3D_VAEEncodeTiled"


@pytest.fixture(scope="module")
def memory_guards(pack):
    return pack.node_module("shared.memory_guards")


@pytest.fixture(scope="module")
def vae4(comfy):
    return run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)[2]


def _mib(count: float) -> str:
    return f"{count / 2**20:.4f}"


def test_work_limits_come_from_the_environment(memory_guards, monkeypatch):
    for kind, (env, default) in memory_guards.WORK_LIMITS.items():
        monkeypatch.delenv(env, raising=False)
        assert memory_guards.work_limit(kind) == (default, f"the default; override with {env}")
        monkeypatch.setenv(env, "12")
        assert memory_guards.work_limit(kind) == (12, f"{env}=12")
        monkeypatch.setenv(env, "0")  # not a usable limit: the default
        assert memory_guards.work_limit(kind)[0] == default
    monkeypatch.setenv("SDL3D_MAX_TILES", "3")
    with pytest.raises(
        ValueError, match=r"^N: input 'x' = 7: gives 4 tiles \(w\); the limit is 3 \(SDL3D_MAX_TILES=3\)"
    ):
        memory_guards.require_work("N", "x", 7, 4, "tiles", "w", "fix it")
    assert memory_guards.require_work("N", "x", 7, 3, "tiles", "w", "fix it") == 3


@pytest.mark.parametrize("node_id", [DECODE_ID, ENCODE_ID])
def test_a_piece_over_the_memory_limit_becomes_tiles_that_fit(pack, memory_guards, vae4, monkeypatch, caplog, node_id):
    """Untiled (tile_size 0) over the limit: the node runs the tiles a user would have to pick (same result as
    asking for them), says so naming input, value, estimate and fix; refused when not even 64 px tiles fit."""
    z = torch.randn(1, 4, 16, 64, generator=torch.Generator().manual_seed(5))  # 512x128 px
    if node_id == DECODE_ID:
        first = {"samples": {"samples": z}}
        cost = vae4.memory_used_decode
        shape = lambda h, w: (1, 4, h, w)  # noqa: E731
    else:
        first = {"pixels": torch.rand(1, 128, 512, 3, generator=torch.Generator().manual_seed(5))}
        cost = vae4.memory_used_encode
        shape = lambda h, w: (1, 3, h * 8, w * 8)  # noqa: E731
    small, larger = cost(shape(8, 8), vae4.vae_dtype), cost(shape(16, 16), vae4.vae_dtype)
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, _mib((small + larger) / 2))  # 64 px tiles fit, 128 px do not
    node = pack.by_id[node_id]
    with caplog.at_level(logging.WARNING):
        auto = run_node(node, vae=vae4, circular=True, tile_size=0, overlap=64, **first)[0]
    message = " ".join(r.getMessage() for r in caplog.records)
    assert f"input 'tile_size' = 0: one untiled {'decode' if node_id == DECODE_ID else 'encode'} of 512x128 px " in (
        message
    )
    assert "more than the limit" in message and "running 64 px tiles with 8 px overlap instead" in message
    assert "Fix: set tile_size to 64 or lower" in message
    explicit = run_node(node, vae=vae4, circular=True, tile_size=64, overlap=8, **first)[0]
    auto, explicit = (x["samples"] if isinstance(x, dict) else x for x in (auto, explicit))
    assert torch.equal(auto, explicit)
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, _mib(small / 2))
    with pytest.raises(ValueError, match=r"input 'tile_size' = 0: needs about .*even 64 px tiles do not fit"):
        run_node(node, vae=vae4, circular=True, tile_size=0, overlap=64, **first)


def test_too_many_tiles_are_refused_naming_the_count_and_the_limit(pack, vae4, monkeypatch):
    z = {"samples": torch.zeros(1, 4, 16, 64)}
    monkeypatch.setenv("SDL3D_MAX_TILES", "100")
    with pytest.raises(ValueError) as err:  # 64 px tiles every 8 px: 9 x 57 tiles
        run_node(pack.by_id[DECODE_ID], samples=z, vae=vae4, circular=False, tile_size=64, overlap=56)
    text = str(err.value)
    assert text.startswith("VAE Decode (360 / Tiled): input 'overlap' = 56: gives 513 tiles (64 px tiles every 8 px")
    assert "the limit is 100 (SDL3D_MAX_TILES=100)" in text and "Fix: raise tile_size or lower overlap" in text


def test_the_latent_of_another_model_family_blames_the_vae(pack, vae4, comfy):
    """A 16-channel (SD3 / Flux) VAE given a 4-channel latent: the input to change is 'vae', not 'samples'."""
    import comfy.sd
    import comfy.taesd.taesd

    with torch.inference_mode():
        vae16 = comfy.sd.VAE(sd=comfy.taesd.taesd.TAESD(latent_channels=16).state_dict())
    with pytest.raises(ValueError) as err:
        run_node(pack.by_id[DECODE_ID], samples={"samples": torch.zeros(1, 4, 8, 8)}, vae=vae16)
    text = str(err.value)
    assert text.startswith("VAE Decode (360 / Tiled): input 'vae' = 'VAE for 16-channel latents': does not fit the ")
    assert "4-channel latent in 'samples' (SD1.x / SD2.x / SDXL" in text
    assert "Fix: connect the VAE of the model that made the latent: SD1.x / SD2.x / SDXL" in text


def test_an_ldm3d_vae_in_vae_encode_tiled_points_to_ldm3d_encode(pack):
    ldm3d_vae = run_node(pack.node_module("ldm3d.loader_nodes").LDM3DLoader, model_name="ldm3d")[2]
    with pytest.raises(ValueError) as err:
        run_node(pack.by_id[ENCODE_ID], pixels=torch.rand(1, 64, 64, 3), vae=ldm3d_vae)
    text = str(err.value)
    assert text.startswith("VAE Encode (Tiled): input 'vae' = 'LDM3D VAE (6 channels: RGB + depth)': ")
    assert "Fix: use the 'LDM3D Encode' node (image + depth MASK)" in text


def test_the_patch_lowers_a_view_batch_that_does_not_fit(pack, sd, memory_guards, monkeypatch, caplog):
    """view_batch_size 256 on 5 views under a limit that holds 2: batches of 2 (same result), and a warning."""
    patch, ksampler = pack.by_id["SDL3D_SyncDiffusionModelPatch"], stock_node("KSampler")
    memory = pack.node_module("sync.memory_plan")
    per_view = memory.denoise_cost_per_view(sd["model"].model, 1, 4, 8, 8)
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, _mib(2.5 * per_view))

    def sample(view_batch_size):
        (model,) = run_node(
            patch, model=sd["model"], window=64, stride=32, circular=False, view_batch_size=view_batch_size
        )
        inputs = dict(seed=3, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
        conds = dict(positive=sd["positive"], negative=sd["negative"], latent_image=empty_latent(8, 24))
        return run_node(ksampler, model=model, **conds, **inputs)[0]

    with caplog.at_level(logging.WARNING):
        lowered = sample(256)
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "SyncDiffusion Model Patch: input 'view_batch_size' = 256: 5 views per call need about" in message
    assert "running 2 per call instead. Fix: set view_batch_size to 2 or less (0 = auto)" in message
    assert torch.allclose(lowered["samples"], sample(2)["samples"], atol=1e-5, rtol=0)


def test_a_memory_budget_above_the_limit_is_planned_at_the_limit(pack, memory_guards, monkeypatch, caplog):
    sync_inputs = pack.node_module("sync.inputs")
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, "1024")
    args = ("SyncDiffusion KSampler", 512, 128, 20.0, 0.95, 1, 10, "middle", False, 0)
    with caplog.at_level(logging.WARNING):
        settings = sync_inputs.sync_settings(*args, memory_budget_gb=4096.0)
    assert settings.memory_budget_gb == 1.0
    assert "SyncDiffusion KSampler: input 'memory_budget_gb' = 4096.0: is more than the memory limit 1.0 GiB" in (
        caplog.text
    )
    assert sync_inputs.sync_settings(*args, memory_budget_gb=0.5).memory_budget_gb == 0.5


def test_coherence_refuses_too_many_pairs_before_loading_anything(pack, monkeypatch):
    coherence = pack.by_id["SDL3D_SyncDiffusionCoherence"]
    monkeypatch.setenv("SDL3D_MAX_PAIRS", "5")
    loads = []
    monkeypatch.setattr(pack.node_module("sync.coherence_nodes"), "load_lpips", lambda *a, **k: loads.append(a))
    with pytest.raises(ValueError) as err:  # 3 crops: 3 Intra-LPIPS + 3 Intra-Style-L pairs
        run_node_ui(coherence, image=torch.rand(1, 32, 96, 3), crop_size=32)
    text = str(err.value)
    assert text.startswith("SyncDiffusion Coherence: input 'crop_size' = 32: gives 6 pairs ('image': 1 x 96x32")
    assert "the limit is 5 (SDL3D_MAX_PAIRS=5)" in text and "Fix: raise crop_size" in text
    with pytest.raises(ValueError, match=r"input 'image' = tensor\(4, 32, 96, 3\) float32: gives 24 pairs"):
        monkeypatch.setenv("SDL3D_MAX_PAIRS", "12")  # one panorama fits, four do not: the batch is at fault
        run_node_ui(coherence, image=torch.rand(4, 32, 96, 3), crop_size=32)
    assert not loads
