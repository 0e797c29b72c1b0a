"""What the LDM3D VAE and UNet code relies on in ComfyUI 0.3.75 itself, checked against the real ComfyUI.

- LDM3DVAE overrides comfy.sd.VAE's private `decode_tiled_`, the out-of-memory fallback of `decode`: these tests
  fail if ComfyUI renames it, changes its signature or stops calling it from `decode`.
- The UNet config of a diffusers folder comes from ComfyUI's own detection where that detection knows the model,
  and from unet/config.json where it does not; both must describe the weights the way ComfyUI's checkpoint
  detection reads them.
"""

from __future__ import annotations

import inspect
import json

import pytest
import torch


@pytest.fixture(scope="module")
def vae_module(pack):
    return pack.node_module("ldm3d.ldm3d_vae")


@pytest.fixture(scope="module")
def fixture_vae(comfy, vae_module):
    import comfy.utils as comfy_utils

    sd = comfy_utils.load_torch_file(
        str(comfy.models / "ldm3d" / "ldm3d" / "vae" / "diffusion_pytorch_model.safetensors"), safe_load=True
    )
    vae = vae_module.LDM3DVAE(sd, source="ldm3d fixture")
    assert vae.ldm3d_channels == 6
    return vae


def test_vae_override_has_comfys_private_signature(vae_module):
    import comfy.sd

    base = inspect.signature(comfy.sd.VAE.decode_tiled_)
    ours = inspect.signature(vae_module.LDM3DVAE.decode_tiled_)
    assert list(base.parameters) == ["self", "samples", "tile_x", "tile_y", "overlap"]
    assert [(p.name, p.default) for p in ours.parameters.values()] == [
        (p.name, p.default) for p in base.parameters.values()
    ]
    assert list(inspect.signature(comfy.sd.VAE.decode).parameters)[:2] == ["self", "samples_in"]


def test_vae_decode_falls_back_to_our_tiled_decode_on_oom(fixture_vae, vae_module):
    """Out of memory in comfy.sd.VAE.decode: ComfyUI must call decode_tiled_, and ours keeps all 6 channels."""
    import comfy.model_management as mm

    z = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(5))
    untiled = fixture_vae.decode_rgbd(z)
    assert untiled.shape == (1, 64, 128, 6)

    model = fixture_vae.first_stage_model
    real_decode, calls, fallbacks = model.decode, [], []

    def decode_out_of_memory_once(latent, **kwargs):
        calls.append(tuple(latent.shape))
        if len(calls) == 1:
            raise mm.OOM_EXCEPTION("test: out of memory on the untiled decode")
        return real_decode(latent, **kwargs)

    def spy(*args, **kwargs):
        fallbacks.append(args)
        return vae_module.LDM3DVAE.decode_tiled_(fixture_vae, *args, **kwargs)

    model.decode, fixture_vae.decode_tiled_ = decode_out_of_memory_once, spy
    try:
        fallback = fixture_vae.decode_rgbd(z)
        rgb = fixture_vae.decode(z)
    finally:
        model.decode = real_decode
        del fixture_vae.decode_tiled_
    assert len(fallbacks) == 1, "comfy.sd.VAE.decode no longer falls back to decode_tiled_ on out-of-memory"
    assert len(calls) >= 2
    assert fallback.shape == untiled.shape  # ComfyUI's own decode_tiled_ would give (or fail on) 3 channels
    assert torch.allclose(fallback, untiled, atol=1e-5)  # the latent fits in one tile: same pixels
    assert torch.allclose(rgb, untiled[..., :3], atol=1e-6)


FIXTURE_MODELS = ("ldm3d", "ldm3d-4c", "ldm3d-pano", "ldm3d-sr")
# What ComfyUI's checkpoint detection reads from the weights (not the head count: the weights do not show it)
ARCHITECTURE_KEYS = (
    "in_channels",
    "out_channels",
    "model_channels",
    "num_res_blocks",
    "channel_mult",
    "transformer_depth",
    "transformer_depth_output",
    "transformer_depth_middle",
    "context_dim",
    "use_linear_in_transformer",
    "adm_in_channels",
)
# Intel's full-size SD1.x UNet levels (the fixtures keep everything else of the Intel configs but have one level)
FULL_SIZE_LEVELS = {
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
}


@pytest.fixture(scope="module")
def unet_module(pack):
    return pack.node_module("ldm3d.unet")


def _fixture_unet(comfy, name):
    import comfy.utils as comfy_utils

    folder = comfy.models / "ldm3d" / name / "unet"
    cfg = json.loads((folder / "config.json").read_text())
    return cfg, comfy_utils.load_torch_file(str(folder / "diffusion_pytorch_model.safetensors"), safe_load=True)


def _full_size_weights(cfg):
    """A diffusers UNet of that config on the meta device: its state dict has every key and shape, no data."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        model = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    return model.state_dict()


def _checkpoint_detection(config, diffusers_sd):
    """ComfyUI's checkpoint detection (any size) on the same weights, renamed to LDM keys with `config`."""
    import comfy.model_detection as detection
    import comfy.utils as comfy_utils

    mapping = comfy_utils.unet_to_diffusers(config)
    mapping["class_embedding.weight"] = "label_emb.weight"
    return detection.detect_unet_config({mapping[k]: v for k, v in diffusers_sd.items()}, "")


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_fixture_unet_config_is_what_comfy_reads_from_the_weights(comfy, unet_module, name):
    """The random-weight fixtures: ComfyUI's diffusers detection has no entry for them, so config.json is read;
    the result names the weights the way ComfyUI's own checkpoint detection reads them."""
    import comfy.model_detection as detection

    cfg, sd = _fixture_unet(comfy, name)
    assert detection.unet_config_from_diffusers_unet(sd) is None
    config = unet_module.unet_config_from_diffusers(cfg, sd)
    detected = _checkpoint_detection(config, sd)
    assert {k: config[k] for k in ARCHITECTURE_KEYS} == {k: detected[k] for k in ARCHITECTURE_KEYS}
    assert config.get("num_classes") == cfg.get("num_class_embeds") == (1000 if name == "ldm3d-sr" else None)
    assert config["in_channels"] == (8 if name == "ldm3d-sr" else 4)


@pytest.mark.parametrize("name", FIXTURE_MODELS)
def test_full_size_unet_config_is_comfys_own_where_it_knows_the_model(comfy, unet_module, name):
    """The fixture configs at Intel's full SD1.x size: ComfyUI's detection gives its SD15 entry for ldm3d, -4c and
    -pano, equal to what config.json says, and is used; it has no entry for the 8-channel SR UNet."""
    import comfy.model_detection as detection

    cfg = dict(_fixture_unet(comfy, name)[0], **FULL_SIZE_LEVELS)
    sd = _full_size_weights(cfg)
    detected = detection.unet_config_from_diffusers_unet(sd)
    from_json = unet_module.unet_config_from_diffusers(cfg)
    config = unet_module.unet_config_from_diffusers(cfg, sd)
    if name == "ldm3d-sr":
        assert detected is None and config == from_json and config["num_classes"] == 1000
        checkpoint = _checkpoint_detection(config, sd)
        assert {k: config[k] for k in ARCHITECTURE_KEYS} == {k: checkpoint[k] for k in ARCHITECTURE_KEYS}
    else:
        assert detected is not None and detected["model_channels"] == 320 and detected["num_heads"] == 8
        assert config == {k: v for k, v in detected.items() if k != "dtype"}
        assert unet_module.same_unet_config(config, from_json)
        assert not unet_module.same_unet_config(config, dict(from_json, num_heads=16))


@pytest.mark.parametrize(
    "change, key, expected",
    [
        ({"num_class_embeds": 1000}, "num_classes", 1000),  # class labels: invisible to ComfyUI's detection
        ({"attention_head_dim": 16}, "num_heads", 16),  # head count: not in the weights' shapes
    ],
)
def test_config_json_wins_where_comfys_detection_cannot_see_it(comfy, unet_module, change, key, expected):
    import comfy.model_detection as detection

    cfg = dict(_fixture_unet(comfy, "ldm3d")[0], **FULL_SIZE_LEVELS, **change)
    sd = _full_size_weights(cfg)
    assert detection.unet_config_from_diffusers_unet(sd).get(key) != expected  # ComfyUI says SD15
    assert unet_module.unet_config_from_diffusers(cfg, sd)[key] == expected


def test_weights_comfys_detection_cannot_walk_fall_back_to_config_json(comfy, unet_module):
    import comfy.model_detection as detection

    cfg, sd = _fixture_unet(comfy, "ldm3d")
    partial = {k: v for k, v in sd.items() if ".attn2.to_k." not in k}
    with pytest.raises(KeyError):
        detection.unet_config_from_diffusers_unet(partial)
    assert unet_module.unet_config_from_diffusers(cfg, partial) == unet_module.unet_config_from_diffusers(cfg)
