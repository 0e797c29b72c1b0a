"""In-process checks of the guards that the API suite cannot see from outside: LDM3D Decode switching to its tiled
path, the SDL3D_MEMORY_LIMIT_MB override (nodes/shared/memory_guards.py), and save prefixes that go bad between queue
time and run time (nodes/shared/file_guards.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from comfy_harness import run_node


@pytest.fixture(scope="module")
def memory_guards(pack):
    return pack.node_module("shared.memory_guards")


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
    ln = pack.node_module("ldm3d.loader_nodes")
    codec = pack.node_module("ldm3d.codec_nodes")
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


def _save_calls(pack, prefix):
    """Each save node of the pack run on a tiny input with `prefix` (the checks at run time, after validation)."""
    image = torch.full((1, 8, 16, 3), 0.5)
    depth = torch.full((1, 8, 16), 0.5)
    mesh = dict(format="glb", mesh_width=16, mesh_height=8, depth_mode="sphere_displace", near_m=1.0, far_m=20.0)
    mesh |= dict(invert_depth=False, metric_scale_m=10.0, sphere_radius_m=6.0, displacement_m=4.0)
    return {
        "SDL3D_SaveDepthPNG16": lambda: run_node(
            pack.by_id["SDL3D_SaveDepthPNG16"], depth=depth, filename_prefix=prefix
        ),
        "SDL3D_SaveStereo360": lambda: run_node(
            pack.by_id["SDL3D_SaveStereo360"],
            images=torch.full((1, 16, 16, 3), 0.5),
            layout="auto",
            filename_prefix=prefix,
        ),
        "SDL3D_SaveDepthMesh": lambda: run_node(
            pack.by_id["SDL3D_SaveDepthMesh"],
            image=image,
            depth=depth,
            cull_edges=False,
            edge_ratio_tau=0.2,
            filename_prefix=prefix,
            **mesh,
        ),
    }


def test_save_prefix_gone_bad_after_queueing_is_refused_at_run_time_without_a_path(pack, comfy):
    """A subfolder that became a file after validation, and a write the OS refuses (the file name is taken by a
    folder): the pack's error naming filename_prefix, never ComfyUI's NotADirectoryError / IsADirectoryError
    with the server path."""
    out = Path(comfy.folder_paths.get_output_directory())
    (out / "became_a_file").write_text("x")
    for node_id, call in _save_calls(pack, "became_a_file/x").items():
        with pytest.raises(ValueError, match=r"input 'filename_prefix' .*subfolder 'became_a_file' exists") as err:
            call()
        assert str(out) not in str(err.value) and "Fix:" in str(err.value), node_id
    # '%batch_num%' keeps ComfyUI's counter at 1, so the node writes x0_00001_.png: a folder here
    (out / "os_refuses" / "x0_00001_.png").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"input 'filename_prefix' .*could not be written \(Is a directory\)") as err:
        _save_calls(pack, "os_refuses/x%batch_num%")["SDL3D_SaveDepthPNG16"]()
    assert str(out) not in str(err.value)
