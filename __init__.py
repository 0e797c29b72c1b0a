"""syncdiffusion-ldm3d: SyncDiffusion panoramas, LDM3D RGB + depth and stereo 360 for ComfyUI.

ComfyUI loads this folder as a custom-node pack. The exports are the V3 entry point and WEB_DIRECTORY; node
modules are imported lazily so that importing the pack has no side effects.
WEB_DIRECTORY is a plain constant: ComfyUI serves web/ at /extensions/<this folder>/ and auto-loads its *.js
(the 360 viewer, web/js/sdl3d_viewer360.js).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Return the pack's ComfyExtension (ComfyUI 0.3.75+ V3 entry point)."""
    from .nodes.extension import SyncDiffusionLDM3DExtension

    return SyncDiffusionLDM3DExtension()
