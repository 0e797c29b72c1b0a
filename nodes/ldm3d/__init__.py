"""LDM3D: loading the checkpoints, RGBD latents to RGB + depth and back, depth pack / unpack and 16-bit saves."""


def node_classes() -> list:
    """This package's node classes, in menu order (imported on call, not at import time)."""
    from .codec_nodes import LDM3D_CODEC_NODES
    from .depth_nodes import DEPTH_NODES
    from .loader_nodes import LDM3D_NODES

    return [*LDM3D_NODES, *LDM3D_CODEC_NODES, *DEPTH_NODES]
