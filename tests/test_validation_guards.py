"""In-process checks of the memory guards in nodes/memory_guards.py that the API suite cannot see from outside:
LDM3D Decode switching to its tiled path, and the SDL3D_MEMORY_LIMIT_MB override."""

from __future__ import annotations

import logging

import pytest
import torch

from comfy_harness import run_node


@pytest.fixture(scope="module")
def memory_guards(pack):
    return pack.node_module("memory_guards")


def test_memory_limit_override_and_fallback(memory_guards, monkeypatch):
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, "123")
    assert memory_guards.memory_limit("cpu") == (123 * 2**20, f"{memory_guards.ENV_MEMORY_LIMIT}=123")
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, "not a number")
    limit, source = memory_guards.memory_limit("cpu")
    assert limit > 0 and "free" in source
    with pytest.raises(ValueError, match=r"N: input 'x' = 1: needs about 2\.0 GiB.*limit"):
        monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, "1024")
        memory_guards.require_memory("N", "x", 1, 2 * 2**30, "fix it", device="cpu")


def test_untiled_decode_over_the_limit_switches_to_tiles(pack, memory_guards, monkeypatch, caplog):
    ln = pack.node_module("ldm3d_nodes")
    codec = pack.node_module("ldm3d_codec_nodes")
    vae = run_node(ln.LDM3DLoader, model_name="ldm3d-4c")[2]
    z = torch.randn(1, 4, 16, 32, generator=torch.Generator().manual_seed(3))
    untiled_cost = vae.memory_used_decode(tuple(z.shape), vae.vae_dtype)
    tile_cost = vae.memory_used_decode((1, 4, 8, 8), vae.vae_dtype)
    cost_128 = vae.memory_used_decode((1, 4, 16, 16), vae.vae_dtype)
    assert tile_cost < cost_128 < untiled_cost
    limit_mb = (tile_cost + cost_128) / 2 / 2**20  # untiled and 128 px tiles do not fit, 64 px tiles do
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, f"{limit_mb:.3f}")
    with caplog.at_level(logging.WARNING):
        auto = run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae)
    assert any("decoding in tiles instead" in r.getMessage() for r in caplog.records)
    explicit = run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae, tiled=True, tile_size=64, overlap=16)
    assert auto[0].shape == (1, 128, 256, 3)
    assert torch.equal(auto[0], explicit[0]) and torch.equal(auto[1], explicit[1])
    monkeypatch.setenv(memory_guards.ENV_MEMORY_LIMIT, f"{tile_cost / 4 / 2**20:.3f}")  # not even one tile fits
    with pytest.raises(ValueError, match=r"input 'tile_size' = 64: needs about .* Fix: lower tile_size"):
        run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae)
