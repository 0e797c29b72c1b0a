"""LPIPS, TAESD and the coherence VGG are read once per file and placed by ComfyUI's model management."""

from __future__ import annotations

import os
import time

import torch
from model_fixtures import empty_latent, sync_ksampler

SYNC = dict(sync_weight=800.0, sync_steps=1, steps=2)


def test_cached_builds_once_per_file_state_and_again_after_the_file_changes(pack, tmp_path):
    cache = pack.node_module("shared.model_cache")
    path = tmp_path / "weights.bin"
    path.write_bytes(b"one")
    builds = []

    def build():
        builds.append(path.read_bytes())
        return object()

    first = cache.cached(cache.file_key("test", str(path)), build)
    assert cache.cached(cache.file_key("test", str(path)), build) is first and len(builds) == 1
    path.write_bytes(b"two!")  # new size and mtime: read again
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    second = cache.cached(cache.file_key("test", str(path)), build)
    assert second is not first and builds == [b"one", b"two!"]


def test_lpips_and_taesd_are_loaded_once_and_behind_comfyui_patchers(pack, comfy, sd):
    import comfy.model_patcher

    inputs = pack.node_module("sync.inputs")
    memory_plan = pack.node_module("sync.memory_plan")
    a, b = inputs.load_lpips("test", "alex"), inputs.load_lpips("test", "alex", resolution=64)
    assert a.model is b.model and a.patcher is b.patcher and b.resolution == 64
    assert isinstance(a.patcher, comfy.model_patcher.ModelPatcher) and a.patcher.model is a.model
    assert inputs.load_lpips("test", "vgg").model is not a.model
    tiny = memory_plan.load_tiny_decoder("test", sd["model"])
    assert memory_plan.load_tiny_decoder("test", sd["model"]) is tiny


def test_sync_run_loads_lpips_through_model_management(pack, comfy, sd, smooth_vae):
    import comfy.model_management

    lpips = pack.node_module("sync.inputs").load_lpips("test", "alex")
    comfy.model_management.unload_all_models()
    assert not any(m.model is lpips.patcher for m in comfy.model_management.current_loaded_models)
    out = sync_ksampler(pack, sd, empty_latent(8, 16), vae=smooth_vae, lpips=lpips, **SYNC)
    assert torch.isfinite(out).all()
    loaded = [m.model for m in comfy.model_management.current_loaded_models]
    assert any(m is lpips.patcher for m in loaded), "LPIPS was not loaded by comfy.model_management"
