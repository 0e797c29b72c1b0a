"""Helpers shared by node modules: categories, node names, actionable errors, tensor checks, depth inputs.

Nothing here does math; it formats errors, checks what ComfyUI hands a node and builds the cores' parameter
objects (``ldm3d_core.distance.DepthMapping``) from widget values.
"""

from __future__ import annotations

import math

import torch
from comfy_api.latest import io

from ...ldm3d_core import distance

PACK_CATEGORY = "syncdiffusion-ldm3d"
CATEGORY_SAMPLING = f"{PACK_CATEGORY}/sampling"
CATEGORY_LDM3D = f"{PACK_CATEGORY}/ldm3d"
CATEGORY_DEPTH = f"{PACK_CATEGORY}/depth"
CATEGORY_STEREO = f"{PACK_CATEGORY}/stereo360"
CATEGORY_MESH = f"{PACK_CATEGORY}/mesh"
CATEGORY_LOADERS = f"{PACK_CATEGORY}/loaders"


class NodeInputError(ValueError):
    """A user-facing input error. The message names node, input, value and fix."""

    # ComfyUI reports `module.qualname` as the error type, and loads a pack under its install path as the
    # module name: a fixed name keeps server paths out of every error the UI and /history show.
    __module__ = "syncdiffusion_ldm3d"


# ComfyUI shows `module.qualname` as the error type; the pack is imported under its folder path, so name the
# module plainly (the error history then reads "syncdiffusion_ldm3d.NodeInputError", not a file path).
NodeInputError.__module__ = PACK_CATEGORY.replace("-", "_")


_NODE_NAMES: dict[tuple[str, str], str] = {}


def node_name(node_class) -> str:
    """The name every error and log line gives a node: its schema's display name (what the user sees).

    Uses ``define_schema`` (not ``GET_SCHEMA``): ComfyUI calls ``validate_inputs``/``execute`` on a locked class
    clone, where ``GET_SCHEMA`` cannot set its class attributes. Cached per class (clones share the key)."""
    key = (node_class.__module__, node_class.__qualname__)
    if key not in _NODE_NAMES:
        schema = node_class.define_schema()
        _NODE_NAMES[key] = schema.display_name or schema.node_id
    return _NODE_NAMES[key]


def input_error(node: str, input_name: str, value, problem: str, fix: str) -> NodeInputError:
    """Build the pack's standard error: '<node>: input '<name>' = <value>: <problem>. Fix: <fix>'."""
    shown = describe(value)
    return NodeInputError(f"{node}: input '{input_name}' = {shown}: {problem}. Fix: {fix}")


def describe(value) -> str:
    """How errors show a value: tensors and latents by shape, never an object repr."""
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, dict) and "samples" in value:
        return f"LATENT{tuple(value['samples'].shape)}"
    if not isinstance(value, (str, int, float, bool, type(None), tuple, list)):
        return f"<{type(value).__name__}>"  # never an object repr (install path, memory address)
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def require_image(node: str, input_name: str, image, channels: tuple[int, ...] = (3,)) -> torch.Tensor:
    """Check an IMAGE tensor is [B,H,W,C] with C in `channels` and finite values."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        raise input_error(
            node,
            input_name,
            image,
            "expected an IMAGE tensor [batch, height, width, channels]",
            "connect an IMAGE output (e.g. Load Image or VAE Decode)",
        )
    if image.shape[-1] not in channels:
        raise input_error(
            node,
            input_name,
            image,
            f"expected {' or '.join(map(str, channels))} channels, got {image.shape[-1]}",
            "convert the image to RGB first",
        )
    require_finite(node, input_name, image)
    return image


def require_mask(node: str, input_name: str, mask) -> torch.Tensor:
    """Accept a MASK [B,H,W] (or [H,W]) and return it as float [B,H,W]; values must be finite."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        raise input_error(
            node,
            input_name,
            mask,
            "expected a MASK tensor [batch, height, width]",
            "connect a MASK output (e.g. LDM3D Decode's depth or Load Depth PNG)",
        )
    mask = mask.unsqueeze(0) if mask.ndim == 2 else mask
    require_finite(node, input_name, mask)
    return mask.float()


def require_finite(node: str, input_name: str, tensor: torch.Tensor) -> None:
    """Raise if the tensor holds NaN or inf values, saying how many."""
    bad = (~torch.isfinite(tensor)).sum().item()
    if bad:
        raise input_error(
            node,
            input_name,
            tensor,
            f"contains {bad} NaN/inf values",
            "fix the upstream node (NaNs usually come from an fp16 VAE; decode in fp32)",
        )


def require_same_size(
    node: str, name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, a_hw: tuple[int, int], b_hw: tuple[int, int]
) -> None:
    """Raise if two inputs do not share height and width."""
    if tuple(a_hw) != tuple(b_hw):
        raise input_error(
            node,
            name_b,
            b,
            f"size {b_hw[1]}x{b_hw[0]} (WxH) differs from '{name_a}' {a_hw[1]}x{a_hw[0]}",
            f"resize one of them so both are {a_hw[1]}x{a_hw[0]}",
        )


# ---------------------------------------------------------------- depth inputs (stereo and mesh nodes)


DEPTH_TOOLTIP = (
    "Depth map in [0, 1], white = near (LDM3D Decode's depth, a depth-estimator MASK or a 16-bit depth "
    "PNG loaded as MASK). An IMAGE is accepted too: its channel mean is used. Batch 1 is shared by "
    "every image."
)

# DepthMapping field -> node input, and the fix an error about that input suggests
DEPTH_INPUT_OF = {
    "mode": "depth_mode",
    "near": "near_m",
    "far": "far_m",
    "invert": "invert_depth",
    "scale": "metric_scale_m",
    "radius": "sphere_radius_m",
    "displacement": "displacement_m",
}
DEPTH_FIX = {
    "depth_mode": f"use one of {distance.DEPTH_MODES}",
    "near_m": "use a near distance > 0 such as 1.0 (metres)",
    "far_m": "set far_m > near_m (0 = infinity, inverse mode only)",
    "invert_depth": "use true or false",
    "metric_scale_m": "use e.g. 10 (metres for D = 1)",
    "sphere_radius_m": "use a radius > 0 such as 6 (metres)",
    "displacement_m": "lower displacement_m or raise sphere_radius_m",
}


def depth_inputs(default_mode: str = "inverse") -> list:
    """The depth -> distance widgets shared by the stereo and mesh nodes (ids are forever)."""
    return [
        io.Combo.Input(
            "depth_mode",
            options=list(distance.DEPTH_MODES),
            default=default_mode,
            tooltip="How depth values become distances. inverse: 1/r = D/near + (1-D)/far (LDM3D, MiDaS, "
            "DepthAnything relative). linear: r = near + (1-D)(far-near). metric: r = D * "
            "metric_scale_m. sphere_displace: r = sphere_radius_m - displacement_m * D "
            "(DepthFusion / Intel demo look).",
        ),
        io.Float.Input(
            "near_m",
            default=1.0,
            min=0.01,
            max=1000.0,
            step=0.01,
            tooltip="Distance in metres of white (D = 1) in inverse and linear modes.",
        ),
        io.Float.Input(
            "far_m",
            default=20.0,
            min=0.0,
            max=100000.0,
            step=0.1,
            tooltip="Distance in metres of black (D = 0) in inverse and linear modes; 0 = infinity "
            "(inverse mode only).",
        ),
        io.Boolean.Input("invert_depth", default=False, tooltip="Use 1 - D: turn on for maps where white = far."),
        io.Float.Input(
            "metric_scale_m",
            default=10.0,
            min=0.001,
            max=100000.0,
            step=0.01,
            tooltip="metric mode: metres that D = 1 stands for.",
        ),
        io.Float.Input(
            "sphere_radius_m",
            default=6.0,
            min=0.01,
            max=10000.0,
            step=0.01,
            tooltip="sphere_displace mode: radius of the sphere where D = 0 (THREE.6DOF uses 6).",
        ),
        io.Float.Input(
            "displacement_m",
            default=4.0,
            min=0.0,
            max=10000.0,
            step=0.01,
            tooltip="sphere_displace mode: how far D = 1 is pulled toward the viewer (THREE.6DOF uses 4); "
            "must be smaller than sphere_radius_m.",
        ),
    ]


def depth_mapping(node: str, finite_far: bool = False, **widgets) -> distance.DepthMapping:
    """The core ``DepthMapping`` built once from the depth widgets; far_m <= 0 means infinity.

    ``widgets``: the depth widgets by input name (``depth_inputs``; a missing one takes its default).
    ``DepthMapping`` is the one check of these values; its errors become node errors naming the input.
    ``finite_far``: also refuse an infinite far distance (a mesh needs one)."""
    values = {spec.id: spec.default for spec in depth_inputs()}  # a widget not given takes its default
    values.update(widgets)
    depth_mode, near_m, far_m = values["depth_mode"], values["near_m"], values["far_m"]
    far = far_m
    if isinstance(far_m, (int, float)) and not isinstance(far_m, bool) and math.isfinite(far_m) and far_m <= 0:
        far = math.inf  # the widget's 'infinity'
    try:
        mapping = distance.DepthMapping(
            mode=depth_mode,
            near=near_m,
            far=far,
            invert=bool(values["invert_depth"]),
            scale=values["metric_scale_m"],
            radius=values["sphere_radius_m"],
            displacement=values["displacement_m"],
        )
    except distance.DepthMappingError as err:
        name = DEPTH_INPUT_OF[err.field]
        raise input_error(node, name, values[name], err.problem, DEPTH_FIX[name]) from None
    if finite_far and mapping.mode == "inverse" and math.isinf(mapping.far):
        raise input_error(node, "far_m", far_m, "a mesh needs a finite far distance", "set far_m > near_m (e.g. 20)")
    return mapping


def equirect_depth_inputs(image_tooltip: str) -> list:
    """The panorama and its depth map: the first two inputs of the stereo and mesh nodes."""
    return [
        io.Image.Input("image", tooltip=image_tooltip),
        io.MultiType.Input("depth", types=[io.Mask, io.Image], tooltip=DEPTH_TOOLTIP),
    ]


def equirect_depth(
    node: str, image, depth, finite_far: bool = False, **widgets
) -> tuple[torch.Tensor, distance.DepthMapping]:
    """The checks every stereo and mesh node starts with: a 2:1 equirect IMAGE, its depth as float [B, H, W]
    (``depth_batch``) and the ``DepthMapping`` of the depth widgets (``depth_mapping``)."""
    require_equirect(node, require_image(node, "image", image))
    return depth_batch(node, depth, image), depth_mapping(node, finite_far, **widgets)


def depth_batch(node: str, depth, image: torch.Tensor) -> torch.Tensor:
    """Validate a MASK or IMAGE depth against ``image`` and return float [B, H, W] (not a view of the input)."""
    if not isinstance(depth, torch.Tensor) or depth.ndim not in (2, 3, 4):
        raise input_error(
            node,
            "depth",
            depth,
            "expected a MASK [batch, height, width] or an IMAGE",
            "connect LDM3D Decode's depth, a depth estimator output or Load Depth PNG",
        )
    d = depth.float()
    if d.ndim == 4:
        d = d[..., :3].mean(dim=-1)
    elif d.ndim == 2:
        d = d[None]
    require_finite(node, "depth", d)
    require_same_size(node, "image", image, "depth", depth, tuple(image.shape[1:3]), tuple(d.shape[1:3]))
    if d.shape[0] not in (1, image.shape[0]):
        raise input_error(
            node,
            "depth",
            depth,
            f"batch {d.shape[0]} differs from the image batch {image.shape[0]}",
            "give one depth map per image, or a single depth map for all",
        )
    return d.expand(image.shape[0], -1, -1).clone()


def require_equirect(node: str, image: torch.Tensor) -> None:
    """Refuse an IMAGE that is not a 2:1 equirectangular panorama of at least 8x4 pixels."""
    height, width = image.shape[1:3]
    if width != 2 * height:
        raise input_error(
            node,
            "image",
            image,
            f"size {width}x{height} is not a 2:1 equirectangular panorama",
            f"resize or pad it to {2 * height}x{height} (or {width}x{width // 2}) first",
        )
    if height < 4:
        raise input_error(node, "image", image, "is too small", "use at least 8x4 pixels")
