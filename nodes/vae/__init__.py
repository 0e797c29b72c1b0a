"""VAE decode and encode of large and 360 images: tiles with wrap, whole-image GroupNorm statistics."""


def node_classes() -> list:
    """This package's node classes, in menu order (imported on call, not at import time)."""
    from .tiled_nodes import VAE_NODES

    return [*VAE_NODES]
