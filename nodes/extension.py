"""The pack's ComfyExtension: collects the node classes of every node module.

Model folders are registered here (the one side effect ComfyUI packs are allowed), when ComfyUI
calls comfy_entrypoint(), not at import time of the pack root.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import model_folders


def all_node_classes() -> list[type[io.ComfyNode]]:
    """Every node class the pack registers, in menu order."""
    from .coherence_nodes import COHERENCE_NODES
    from .depth_nodes import DEPTH_NODES
    from .ldm3d_codec_nodes import LDM3D_CODEC_NODES
    from .ldm3d_nodes import LDM3D_NODES
    from .mesh_nodes import MESH_NODES
    from .stereo_nodes import STEREO_NODES
    from .stereo_output_nodes import STEREO_OUTPUT_NODES
    from .sync_nodes import SYNC_NODES
    from .sync_patch import PATCH_NODES
    from .vae_nodes import VAE_NODES

    return [
        *SYNC_NODES,
        *PATCH_NODES,
        *COHERENCE_NODES,
        *VAE_NODES,
        *LDM3D_NODES,
        *LDM3D_CODEC_NODES,
        *DEPTH_NODES,
        *STEREO_NODES,
        *STEREO_OUTPUT_NODES,
        *MESH_NODES,
    ]


class SyncDiffusionLDM3DExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        model_folders.register()
        return all_node_classes()
