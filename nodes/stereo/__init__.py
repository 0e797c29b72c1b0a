"""Stereo 360: ODS left/right equirects, hole filling, stereo layouts and saves, displaced-sphere meshes."""


def node_classes() -> list:
    """This package's node classes, in menu order (imported on call, not at import time)."""
    from .fill_nodes import STEREO_FILL_NODES
    from .mesh_nodes import MESH_NODES
    from .ods_nodes import STEREO_NODES
    from .output_nodes import STEREO_OUTPUT_NODES

    return [*STEREO_NODES, *STEREO_FILL_NODES, *STEREO_OUTPUT_NODES, *MESH_NODES]
