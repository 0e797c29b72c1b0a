"""The pack's ComfyExtension: collects the node classes of every feature package.

Model folders are registered here (the one side effect ComfyUI packs are allowed), when ComfyUI
calls comfy_entrypoint(), not at import time of the pack root.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import ldm3d, sphere, stereo, sync, vae
from .shared import model_folders, validation

FEATURE_PACKAGES = (sync, sphere, vae, ldm3d, stereo)


def all_node_classes() -> list[type[io.ComfyNode]]:
    """Every node class the pack registers, in menu order: each feature package lists its own."""
    return [node for package in FEATURE_PACKAGES for node in package.node_classes()]


class SyncDiffusionLDM3DExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        model_folders.register()
        classes = all_node_classes()
        for node_class in classes:
            if issubclass(node_class, validation.CheckedNode):
                validation.bind_queue_checks(node_class)  # reads the schemas, so after the folders exist
        return classes
