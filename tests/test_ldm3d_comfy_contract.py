"""What the LDM3D VAE and UNet code relies on in ComfyUI 0.3.75 itself, checked against the real ComfyUI.

- LDM3DVAE overrides comfy.sd.VAE's private `decode_tiled_`, the out-of-memory fallback of `decode`: these tests
  fail if ComfyUI renames it, changes its signature or stops calling it from `decode`.
- The UNet config of a diffusers folder comes from ComfyUI's own detection where that detection knows the model,
  and from unet/config.json where it does not; both must describe the weights the way ComfyUI's checkpoint
  detection reads them.
"""

from __future__ import annotations

import inspect

import pytest
import torch


@pytest.fixture(scope="module")
def vae_module(pack):
    return pack.node_module("ldm3d_vae")


@pytest.fixture(scope="module")
def fixture_vae(comfy, vae_module):
    import comfy.utils as comfy_utils

    sd = comfy_utils.load_torch_file(str(comfy.models / "ldm3d" / "ldm3d" / "vae" /
                                         "diffusion_pytorch_model.safetensors"), safe_load=True)
    vae = vae_module.LDM3DVAE(sd, source="ldm3d fixture")
    assert vae.ldm3d_channels == 6
    return vae


def test_vae_override_has_comfys_private_signature(vae_module):
    import comfy.sd

    base = inspect.signature(comfy.sd.VAE.decode_tiled_)
    ours = inspect.signature(vae_module.LDM3DVAE.decode_tiled_)
    assert list(base.parameters) == ["self", "samples", "tile_x", "tile_y", "overlap"]
    assert [(p.name, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.default) for p in base.parameters.values()]
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
