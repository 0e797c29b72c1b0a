"""Input checks for every node: one queue-time check derived from the schema, choices, numbers, view geometry.

ComfyUI 0.3.75 lets NaN/inf through every FLOAT widget and does not check V3 dropdown (COMBO) values, and as
soon as a node's ``validate_inputs`` names an input, ComfyUI's own min/max check is skipped for that input.
``CheckedNode`` is the one way the pack validates: ``bind_queue_checks`` (called when the extension registers
its nodes) gives each node a ``validate_inputs`` whose signature is derived from the schema: every FLOAT and
COMBO widget plus the inputs the node's rules read (``RULE_INPUTS``). Those values are checked from the same
schema (finite numbers, min/max, types, choices), then by the node's ``input_rules`` (cross-input rules, paths,
limits known from widgets alone). Everything else is ComfyUI's own check. Linked inputs are not known at queue
time; what depends on them is checked when the node runs.

Files and memory are guarded in ``file_guards`` and ``memory_guards``. See docs/hardening.md.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable

from comfy_api.latest import io

from . import file_guards
from .common import NodeInputError, depth_mapping, input_error, node_name

_WIDGET_KINDS = ("FLOAT", "INT", "COMBO", "STRING", "BOOLEAN")
DEPTH_WIDGETS = ("depth_mode", "near_m", "far_m", "metric_scale_m", "sphere_radius_m", "displacement_m")


# ---------------------------------------------------------------- widgets (queue time and run time)


def _schema_inputs(cls) -> dict:
    schema = cls.define_schema()  # not GET_SCHEMA: ComfyUI calls validate_inputs on a locked class clone
    return {spec.id: spec for spec in schema.inputs}


def widget_problem(node: str, name: str, spec, value) -> str | None:
    """The error text for one widget value against its schema entry, or None when it is fine."""
    kind = getattr(spec, "get_io_type", lambda: None)()
    if kind == "FLOAT" or kind == "INT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(input_error(node, name, value, f"is not a number ({kind})", "enter a number"))
        if kind == "FLOAT" and not math.isfinite(value):
            low, high = getattr(spec, "min", None), getattr(spec, "max", None)
            return str(
                input_error(
                    node,
                    name,
                    value,
                    "is not a finite number (NaN and infinity are refused)",
                    f"enter a number between {low} and {high}"
                    if low is not None and high is not None
                    else f"use the default {spec.default}",
                )
            )
        low, high = getattr(spec, "min", None), getattr(spec, "max", None)
        if low is not None and value < low:
            return str(input_error(node, name, value, f"is below the minimum {low}", f"use a value >= {low}"))
        if high is not None and value > high:
            return str(input_error(node, name, value, f"is above the maximum {high}", f"use a value <= {high}"))
    elif kind == "COMBO":
        options = list(getattr(spec, "options", None) or [])
        if getattr(spec, "upload", None) is None and value not in options:
            shown = ", ".join(map(str, options[:12])) + (", ..." if len(options) > 12 else "")
            return str(input_error(node, name, value, "is not one of the choices", f"pick one of: {shown}"))
    elif kind == "STRING" and not isinstance(value, str):
        return str(input_error(node, name, value, "is not text", "enter text"))
    return None


def widget_problems(cls, node: str, values: dict) -> dict[str, str]:
    """The problem of each given (widget) value that has one, by input name; ``None`` values (linked, not known
    yet) are skipped."""
    specs = _schema_inputs(cls)
    problems = {}
    for name, value in values.items():
        spec = specs.get(name)
        if value is None or spec is None or spec.get_io_type() not in _WIDGET_KINDS:
            continue
        problem = widget_problem(node, name, spec, value)
        if problem:
            problems[name] = problem
    return problems


# ---------------------------------------------------------------- one queue-time check per node


class CheckedNode(io.ComfyNode):
    """Base of the pack's nodes. A node with checks of its own lists the inputs they read in ``RULE_INPUTS`` and
    yields the problems (text or None) from ``input_rules``; values not known at queue time are None there."""

    RULE_INPUTS: tuple[str, ...] = ()

    @classmethod
    def input_rules(cls, node: str, values: dict) -> Iterable[str | None]:
        return ()


def queue_checked_inputs(cls) -> list[str]:
    """The inputs ComfyUI hands to the node's validate_inputs: FLOAT and COMBO widgets, then ``RULE_INPUTS``."""
    specs = _schema_inputs(cls)
    unknown = [name for name in cls.RULE_INPUTS if name not in specs]
    if unknown:
        raise TypeError(f"{cls.__name__}.RULE_INPUTS names inputs its schema lacks: {unknown}")
    auto = [name for name, spec in specs.items() if spec.get_io_type() in ("FLOAT", "COMBO")]
    return auto + [name for name in cls.RULE_INPUTS if name not in auto]


def _validate_inputs(cls, **values) -> bool | str:
    node = node_name(cls)
    bad = widget_problems(cls, node, values)
    # the rules see a value only if its widget check passed (None otherwise, as for a value not known yet)
    known = {name: None if name in bad else values.get(name) for name in queue_checked_inputs(cls)}
    problems = [*bad.values(), *(problem for problem in cls.input_rules(node, known) if problem)]
    return True if not problems else " | ".join(problems)


def bind_queue_checks(cls) -> None:
    """Give a CheckedNode its validate_inputs. ComfyUI reads the function's signature to decide which values it
    hands over (and skips its own min/max check for those), so the signature lists ``queue_checked_inputs``."""
    names = queue_checked_inputs(cls)
    if not names:
        return

    def validate_inputs(node_cls, **values):
        return _validate_inputs(node_cls, **values)

    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    validate_inputs.__signature__ = inspect.Signature(
        [inspect.Parameter("cls", keyword)] + [inspect.Parameter(name, keyword, default=None) for name in names]
    )
    validate_inputs.__qualname__ = f"{cls.__qualname__}.validate_inputs"
    cls.validate_inputs = classmethod(validate_inputs)


def depth_problem(node: str, values: dict, finite_far: bool = False) -> str | None:
    """Rule of the stereo and mesh nodes: the one check of the depth mapping (``common.depth_mapping``) once every
    depth widget (``DEPTH_WIDGETS``) is known."""
    if any(values.get(name) is None for name in DEPTH_WIDGETS):
        return None
    args = {name: values[name] for name in DEPTH_WIDGETS}
    return problem_of(depth_mapping, node, **args, invert_depth=False, finite_far=finite_far)


def problem_of(check, *args, **kwargs) -> str | None:
    """Run a raising check and return its message (for use inside ``validate_inputs``)."""
    try:
        check(*args, **kwargs)
    except NodeInputError as err:
        return str(err)
    return None


def require_choice(node: str, name: str, value, choices, fix: str | None = None) -> None:
    """Refuse a value outside ``choices`` (e.g. sampler names against comfy.samplers.SAMPLER_NAMES)."""
    choices = list(choices)
    if value not in choices:
        shown = ", ".join(map(str, choices[:12])) + (", ..." if len(choices) > 12 else "")
        raise input_error(node, name, value, "is not one of the choices", fix or f"pick one of: {shown}")


def require_sampler_and_scheduler(node: str, sampler_name=None, scheduler=None) -> None:
    """Sampler and scheduler names against ComfyUI's own lists (unknown names are never replaced)."""
    import comfy.samplers

    if sampler_name is not None:
        require_choice(
            node,
            "sampler_name",
            sampler_name,
            comfy.samplers.SAMPLER_NAMES,
            "pick a sampler from the list (e.g. euler, dpmpp_2m)",
        )
    if scheduler is not None:
        require_choice(
            node,
            "scheduler",
            scheduler,
            comfy.samplers.KSampler.SCHEDULERS,
            "pick a scheduler from the list (e.g. normal, karras, ddim_uniform)",
        )


def require_finite_number(node: str, name: str, value, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise input_error(node, name, value, "is not a finite number", fix)
    return float(value)


def schedule_input(message: str, **values) -> tuple[str, object]:
    """Which sync input a sync_core.SyncSchedule error is about (its messages start 'sync weight', 'sync decay'...)."""
    for name in ("sync_decay", "sync_freq", "sync_steps", "sync_weight"):
        if name.replace("_", " ") in message:
            return name, values.get(name)
    return "sync_weight", values.get("sync_weight")


MIN_VIEW_PX = 64  # the window's minimum: 8 latent cells, what a UNet's three downsamplings need


def view_geometry(
    node: str, window: int, stride: int, window_height: int = 0, stride_height: int = 0
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pixel inputs -> ((window h, w), (stride h, w)) in latent units; 0 heights = the width values.

    The one check of the view inputs of every SyncDiffusion node, at queue time (``view_problem``) and at
    run time; the core's own guards (``sync_core.views.axis_offsets``) then never see a bad value from a node."""
    window_height, stride_height = window_height or 0, stride_height or 0
    for name, value in (
        ("window", window),
        ("stride", stride),
        ("window_height", window_height),
        ("stride_height", stride_height),
    ):
        if value % 8 != 0 or value < 0 or (value == 0 and name in ("window", "stride")):
            raise input_error(
                node,
                name,
                value,
                "must be a positive multiple of 8 pixels (one latent cell)",
                f"use {max(8, value // 8 * 8)}",
            )
    if 0 < window_height < MIN_VIEW_PX:
        raise input_error(
            node,
            "window_height",
            window_height,
            f"a view must be at least {MIN_VIEW_PX} px high (like window)",
            f"use 0 (same as window) or {MIN_VIEW_PX} or more",
        )
    if not 0 < stride <= window:
        raise input_error(
            node,
            "stride",
            stride,
            f"must be between 8 and the window ({window})",
            "use a stride <= window (128 for a 512 window, as in the paper)",
        )
    win_h, stride_h = window_height or window, stride_height or stride
    if stride_h > win_h:
        raise input_error(
            node,
            "stride_height" if stride_height else "stride",
            stride_h,
            f"the vertical stride must be <= the view height ({win_h})",
            "lower stride_height (0 = same as stride) or raise window_height",
        )
    return (win_h // 8, window // 8), (stride_h // 8, stride // 8)


def require_view_batch_size(node: str, view_batch_size) -> None:
    if int(view_batch_size) != view_batch_size or view_batch_size < 0:
        raise input_error(
            node,
            "view_batch_size",
            view_batch_size,
            "must be a whole number >= 0",
            "use 0 (auto) or the number of views per model call",
        )


VIEW_INPUTS = ("window", "stride", "window_height", "stride_height")


def view_problem(node: str, values: dict) -> str | None:
    """Rule of the SyncDiffusion nodes (KSampler, Sampler, Model Patch): ``view_geometry`` once window and stride
    are known (multiples of 8, stride <= window, stride_height <= the view height)."""
    window, stride = values.get("window"), values.get("stride")
    if window is None or stride is None:
        return None
    heights = values.get("window_height") or 0, values.get("stride_height") or 0
    return problem_of(view_geometry, node, window, stride, *heights)


class ViewCheckedNode(CheckedNode):
    """Base of the SyncDiffusion nodes with view inputs: their rule is ``view_problem``."""

    RULE_INPUTS = VIEW_INPUTS

    @classmethod
    def input_rules(cls, node, values):
        yield view_problem(node, values)


def prefix_problem(node: str, values: dict) -> str | None:
    """Rule of the save nodes: ``filename_prefix`` stays inside the output folder (``file_guards.prefix_problem``)."""
    prefix = values.get("filename_prefix")
    return None if prefix is None else file_guards.prefix_problem(node, "filename_prefix", prefix)


TILE_INPUTS = ("tile_size", "overlap")


def tile_problem(node: str, values: dict, tiled: bool = True, untiled_fix: bool = True) -> str | None:
    """Rule of the tiling nodes: overlap < tile_size when tiled (tile_size > 0); None while either is unknown.
    ``untiled_fix``: the fix offers tile_size 0 (nodes whose tile_size 0 means untiled)."""
    tile_size, overlap = values.get("tile_size"), values.get("overlap")
    if not tiled or not tile_size or overlap is None:
        return None
    return problem_of(require_overlap_below_tile, node, tile_size, overlap, untiled_fix)


class TileCheckedNode(CheckedNode):
    """Base of the tiling VAE nodes (tile_size 0 = untiled): their rule is ``tile_problem``."""

    RULE_INPUTS = TILE_INPUTS

    @classmethod
    def input_rules(cls, node, values):
        yield tile_problem(node, values)


def require_overlap_below_tile(node: str, tile_size: int, overlap: int, untiled_fix: bool = True) -> None:
    if tile_size and overlap >= tile_size:
        raise input_error(
            node,
            "overlap",
            overlap,
            f"must be smaller than tile_size {tile_size}",
            "lower the overlap (a quarter of the tile is typical)"
            + (" or set tile_size 0 (untiled)" if untiled_fix else ""),
        )
