"""Full-sphere 360: the spherical SyncDiffusion sampler and the equirect / perspective / cubemap nodes."""


def node_classes() -> list:
    """This package's node classes, in menu order (imported on call, not at import time)."""
    from .sphere_nodes import SPHERE_NODES

    return [*SPHERE_NODES]
