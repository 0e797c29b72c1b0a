"""syncdiffusion-ldm3d: SyncDiffusion panoramas, LDM3D RGB + depth and stereo 360 for ComfyUI.

ComfyUI loads this folder as a custom-node pack. The only export is the V3 entry point; node
modules are imported lazily so that importing the pack has no side effects.
"""


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (ComfyUI 0.3.75+ V3 entry point)."""
    from .nodes.extension import SyncDiffusionLDM3DExtension

    return SyncDiffusionLDM3DExtension()
