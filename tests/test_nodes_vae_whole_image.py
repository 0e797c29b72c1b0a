"""Tiled VAE Decode / Encode with whole-image GroupNorm statistics, on a GroupNorm + attention SD-architecture VAE
(tests/model_fixtures.py: groupnorm_vae, ComfyUI's own AutoencoderKL with random weights) in real ComfyUI.

Oracles: the stock VAE Decode / VAE Encode (untiled) and the per-tile statistics of the same tiles
(ldm3d_core.tiling without whole_image, what the nodes did before)."""

from __future__ import annotations

import importlib

import torch

import comfy_inprocess
from comfy_harness import run_node, stock_node

DECODE, ENCODE = "SDL3D_VAEDecode360", "SDL3D_VAEEncodeTiled"


def tiling():
    """The pack's own ldm3d_core.tiling (the copy its nodes use)."""
    return importlib.import_module(f"{comfy_inprocess.PACK_MODULE}.ldm3d_core.tiling")


def latent(h, w, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, h, w, generator=g) + torch.linspace(-1, 1, w)


def test_tiled_decode_with_whole_image_statistics_beats_per_tile(pack, gn_vae):
    z = latent(8, 32)
    (full,) = run_node(stock_node("VAEDecode"), samples={"samples": z}, vae=gn_vae)
    (ours,) = run_node(pack.by_id[DECODE], samples={"samples": z}, vae=gn_vae, circular=False, tile_size=64, overlap=16)
    per_tile = tiling().decode_tiled(z, lambda t: gn_vae.decode(t).movedim(-1, 1), 8, 2, 8).movedim(1, -1)
    err, err_per_tile = (ours - full).abs().mean().item(), (per_tile - full).abs().mean().item()
    print(f"decode mean |error| vs untiled: whole-image {err:.4f}, per tile {err_per_tile:.4f}")
    assert err < 0.5 * err_per_tile, (err, err_per_tile)
    assert not any("forward" in vars(m) for m in gn_vae.first_stage_model.modules()), "modules restored"


def test_tiled_encode_with_whole_image_statistics_beats_per_tile_and_batches_per_sample(pack, gn_vae):
    (pixels,) = run_node(stock_node("VAEDecode"), samples={"samples": latent(8, 32, batch=2, seed=1)}, vae=gn_vae)
    pixels = pixels.clamp(0, 1)
    (full,) = run_node(stock_node("VAEEncode"), pixels=pixels, vae=gn_vae)
    (ours,) = run_node(pack.by_id[ENCODE], pixels=pixels, vae=gn_vae, circular=False, tile_size=64, overlap=16)
    per_tile = tiling().encode_tiled(pixels.movedim(-1, 1), lambda t: gn_vae.encode(t.movedim(1, -1)), 8, 2, 8)
    err = (ours["samples"] - full["samples"]).abs().mean().item()
    err_per_tile = (per_tile - full["samples"]).abs().mean().item()
    print(f"encode mean |error| vs untiled: whole-image {err:.4f}, per tile {err_per_tile:.4f}")
    assert err < 0.5 * err_per_tile, (err, err_per_tile)
    (second,) = run_node(pack.by_id[ENCODE], pixels=pixels[1:], vae=gn_vae, circular=False, tile_size=64, overlap=16)
    assert torch.allclose(ours["samples"][1:], second["samples"], atol=1e-5), "statistics are per sample"
