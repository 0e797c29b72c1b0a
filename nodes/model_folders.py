"""Model folders the pack adds to ComfyUI's search paths.

- `models/lpips/`: ImageNet backbone weights for LPIPS (`vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth`,
  the torchvision file names) used by the SyncDiffusion sync step, and `vgg19-dcbb9e9d.pth` for the
  Intra-Style-L metric of the SyncDiffusion Coherence node.
- `models/ldm3d/`: LDM3D models, as diffusers folders (`Intel/ldm3d-4c` layout) or single safetensors files.
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
