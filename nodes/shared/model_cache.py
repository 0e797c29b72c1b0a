"""Models the pack reads itself (LPIPS, TAESD, the coherence VGG): one copy per file, under ComfyUI's management.

A copy is kept while its file is unchanged: the key is (kind, real path, mtime, size), so replacing the file on disk
reads it again; the last `MAX_ENTRIES` copies are kept. What ComfyUI should place and free goes behind a
`comfy.model_patcher.ModelPatcher` (TAESD is a `comfy.sd.VAE`, which has its own): callers load it with
`comfy.model_management.load_models_gpu`, which also unloads it when another model needs the memory.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import comfy.model_management
import comfy.model_patcher
import torch

MAX_ENTRIES = 6
_entries: OrderedDict[tuple, object] = OrderedDict()
_lock = threading.Lock()


def file_key(kind: str, path: str, *extra) -> tuple:
    """The cache key of `path` as it is now on disk."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return (kind, real, stat.st_mtime_ns, stat.st_size, *extra)


def cached(key: tuple, build: Callable[[], object]) -> object:
    """The object stored under `key`, built (once) by `build()` when absent; the oldest entry goes past MAX_ENTRIES."""
    with _lock:
        if key in _entries:
            _entries.move_to_end(key)
            return _entries[key]
    value = build()  # outside the lock: loading takes seconds
    with _lock:
        value = _entries.setdefault(key, value)
        _entries.move_to_end(key)
        while len(_entries) > MAX_ENTRIES:
            _entries.popitem(last=False)
    return value


def clear() -> None:
    with _lock:
        _entries.clear()


def managed(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """`module` behind a ModelPatcher that loads to the VAE's device (the perceptual losses run where images are
    decoded) and offloads to the VAE's offload device."""
    return comfy.model_patcher.ModelPatcher(
        module,
        load_device=comfy.model_management.vae_device(),
        offload_device=comfy.model_management.vae_offload_device(),
    )
