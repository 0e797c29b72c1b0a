"""Where LDM3D models live in ComfyUI's model folders: the loader's combo names, their paths, and what to do when
one is missing.

Sources (names as the loader's combo shows them):
- `<name>`                  a diffusers folder (model_index.json, unet/, vae/, text_encoder/, scheduler/,
                            tokenizer/) or a single-file checkpoint under models/ldm3d/
- `diffusers/<name>`        a diffusers folder under models/diffusers/ whose VAE has 4 or 6 channels
- `checkpoints/<name>`      a .safetensors checkpoint under models/checkpoints/ whose VAE has 4 or 6 channels
"""

from __future__ import annotations

import json
import os

import folder_paths

from ..shared import model_folders

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
LDM3D_VAE_CHANNELS = (4, 6)  # RGB + depth (ldm3d-4c, -pano, -sr) or RGB + RGB-like depth (ldm3d); plain SD: 3


class LDM3DLoadError(ValueError):
    """A model that cannot be loaded: `problem` and `fix` are turned into the node's input error."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem, self.fix = problem, fix


def _ensure_folders() -> None:
    model_folders.register()


def _folder_models(base: str, max_depth: int = 3) -> list[tuple[str, str]]:
    """(relative name, absolute path) of diffusers folders (model_index.json) and checkpoint files under base."""
    found = []
    if not os.path.isdir(base):
        return found
    for root, dirs, files in os.walk(base, followlinks=True):
        rel = os.path.relpath(root, base)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        if "model_index.json" in files and rel != ".":
            found.append((rel.replace(os.sep, "/"), root))
            dirs[:] = []
            continue
        for f in files:
            if f.lower().endswith(CHECKPOINT_EXTENSIONS) and not f.endswith(".tmp"):
                name = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                found.append((name, os.path.join(root, f)))
        if depth >= max_depth:
            dirs[:] = []
        dirs.sort()
    return found


def list_models() -> list[str]:
    """Names for the loader combo: models/ldm3d entries, then diffusers/ and checkpoints/ prefixed ones."""
    _ensure_folders()
    return sorted(_index().keys(), key=lambda n: (n.startswith(("diffusers/", "checkpoints/")), n))


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for base in folder_paths.get_folder_paths(model_folders.LDM3D_FOLDER):
        for name, path in _folder_models(base):
            index.setdefault(name, path)
    if "diffusers" in folder_paths.folder_names_and_paths:
        for base in folder_paths.get_folder_paths("diffusers"):
            for name, path in _folder_models(base):
                if os.path.isdir(path) and _is_ldm3d_folder(path):
                    index.setdefault(f"diffusers/{name}", path)
    if "checkpoints" in folder_paths.folder_names_and_paths:
        for name in folder_paths.get_filename_list("checkpoints"):
            path = folder_paths.get_full_path("checkpoints", name)
            if path and _is_ldm3d_checkpoint(path):
                index.setdefault(f"checkpoints/{name.replace(os.sep, '/')}", path)
    return index


def _is_ldm3d_folder(path: str) -> bool:
    """A diffusers folder under models/diffusers is listed only if its vae/config.json says 4 or 6 channels."""
    try:
        with open(os.path.join(path, "vae", "config.json"), encoding="utf-8") as f:
            return json.load(f).get("out_channels") in LDM3D_VAE_CHANNELS
    except (OSError, ValueError, AttributeError):
        return False


def _is_ldm3d_checkpoint(path: str) -> bool:
    """A file under models/checkpoints is listed only if it is a .safetensors whose VAE decodes 4 or 6 channels.

    Reads the safetensors header only (a few KB), not the weights; other formats cannot be checked cheaply.
    """
    if not path.lower().endswith(".safetensors"):
        return False
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return False
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return False
    entry = header.get("first_stage_model.decoder.conv_out.weight") if isinstance(header, dict) else None
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return bool(shape) and shape[0] in LDM3D_VAE_CHANNELS


def resolve_model(name: str) -> str:
    """Absolute path of a combo name; raises LDM3DLoadError when it is not there."""
    _ensure_folders()
    path = _index().get(name)
    if path is None:
        raise LDM3DLoadError(
            f"no LDM3D model named {name!r} in models/ldm3d, models/diffusers or models/checkpoints",
            _missing_model_fix(name),
        )
    return path


def _missing_model_fix(name: str) -> str:
    """Where to put the model the workflow asks for, named after that model (not a fixed example)."""
    prefix, _, rest = name.partition("/")
    if prefix == "checkpoints" and rest:
        return (
            f"put the LDM3D single-file checkpoint '{rest}' in ComfyUI/models/checkpoints/ (or pick another "
            f"model in the list) and refresh the node list"
        )
    folder = rest if prefix == "diffusers" and rest else name
    where = "models/diffusers" if prefix == "diffusers" and rest else "models/ldm3d"
    if folder.lower().endswith(CHECKPOINT_EXTENSIONS):
        return f"put the LDM3D checkpoint file '{folder}' in ComfyUI/{where}/ and refresh the node list"
    base = os.path.basename(folder.rstrip("/"))
    source = f"the Intel/{base} diffusers folder" if base.startswith("ldm3d") else "the LDM3D diffusers folder"
    return (
        f"put {source} (model_index.json, unet/, vae/, text_encoder/, scheduler/) at ComfyUI/{where}/{folder} "
        f"(or a .safetensors checkpoint there), then refresh the node list"
    )
