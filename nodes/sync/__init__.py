"""SyncDiffusion on ComfyUI's samplers: the KSampler and Sampler nodes, the Model Patch, Coherence, and the glue
between sync_core and ComfyUI's sampling (gradient bridge, view tiler, memory plans)."""


def node_classes() -> list:
    """This package's node classes, in menu order (imported on call, not at import time)."""
    from .coherence_nodes import COHERENCE_NODES
    from .ksampler_nodes import SYNC_NODES
    from .patch_nodes import PATCH_NODES

    return [*SYNC_NODES, *PATCH_NODES, *COHERENCE_NODES]
