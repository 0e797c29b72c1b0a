"""Model folders the pack adds to ComfyUI's search paths.

- `models/lpips/`: ImageNet backbone weights for LPIPS (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`,
  the torchvision file names) used by the SyncDiffusion sync step, and `vgg19-dcbb9e9d.pth` for the
  Intra-Style-L metric of the SyncDiffusion Coherence node.
- `models/ldm3d/`: LDM3D models, as diffusers folders (`Intel/ldm3d-4c` layout) or single safetensors files.

`folder_label` names a model folder for messages without a server path.
"""

from __future__ import annotations

import os

import folder_paths

LPIPS_FOLDER = "lpips"
LDM3D_FOLDER = "ldm3d"
_EXTENSIONS = {".pth", ".pt", ".safetensors", ".ckpt", ".bin"}


def register() -> None:
    """Register the pack's model folders once (idempotent; called from comfy_entrypoint)."""
    for name in (LPIPS_FOLDER, LDM3D_FOLDER):
        if name in folder_paths.folder_names_and_paths:
            continue
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, exts = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(exts) | _EXTENSIONS)


def folder_label(name: str) -> str:
    """Where a missing file of model folder `name` goes, for messages ('put X into <label>'): "ComfyUI's
    models/<sub>", relative to ComfyUI's models directory, never an absolute server path; folders outside it
    (extra_model_paths.yaml) are mentioned only."""
    paths = folder_paths.get_folder_paths(name) if name in folder_paths.folder_names_and_paths else []
    models = os.path.realpath(folder_paths.models_dir)
    inside, outside = [], False
    for path in paths:
        try:
            rel = os.path.relpath(os.path.realpath(path), models)
        except ValueError:  # another drive
            rel = os.pardir
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            outside = True
        elif rel != os.curdir:
            inside.append("models/" + rel.replace(os.sep, "/"))
    if not inside:
        return f"the '{name}' folder set in extra_model_paths.yaml" if outside else f"ComfyUI's models/{name}"
    return f"ComfyUI's {inside[0]}" + (f" (or another '{name}' folder of extra_model_paths.yaml)" if outside else "")
