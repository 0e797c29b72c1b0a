"""Input checks for every node: queue-time widget checks, choices, numbers, SyncDiffusion geometry.

ComfyUI 0.3.75 lets NaN/inf through every FLOAT widget and does not check V3 dropdown (COMBO) values, and as
soon as a node's ``validate_inputs`` names an input, ComfyUI's own min/max check is skipped for that input. So
``check_widgets`` re-checks, from the node's own schema, everything the named inputs declare: finite floats,
min/max, dropdown membership. Nodes call it from ``validate_inputs`` (HTTP 400 at queue time, linked inputs
arrive as ``None`` and are skipped) and again at the top of ``execute`` (``require_widgets``), which covers
direct calls.

Files and memory are guarded in ``file_guards`` and ``memory_guards``. See docs/hardening.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from .common import NodeInputError, depth_mapping, input_error

_WIDGET_KINDS = ("FLOAT", "INT", "COMBO", "STRING", "BOOLEAN")
DEPTH_WIDGETS = ("depth_mode", "near_m", "far_m", "metric_scale_m", "sphere_radius_m", "displacement_m")


# ---------------------------------------------------------------- widgets (queue time and run time)


def _schema_inputs(cls) -> dict:
    schema = cls.define_schema()  # not GET_SCHEMA: ComfyUI calls validate_inputs on a locked class clone
    return {spec.id: spec for spec in schema.inputs}


def widget_problem(node: str, name: str, spec, value, ranges: bool = True) -> str | None:
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
        low, high = (getattr(spec, "min", None), getattr(spec, "max", None)) if ranges else (None, None)
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


def widget_problems(cls, node: str, values: dict, ranges: bool = True) -> list[str]:
    """Every problem of the given (widget) values; ``None`` values (linked, not known yet) are skipped."""
    specs = _schema_inputs(cls)
    problems = []
    for name, value in values.items():
        spec = specs.get(name)
        if value is None or spec is None or spec.get_io_type() not in _WIDGET_KINDS:
            continue
        problem = widget_problem(node, name, spec, value, ranges)
        if problem:
            problems.append(problem)
    return problems


def check_widgets(cls, node: str, extra: Iterable[str | None] = (), **values) -> bool | str:
    """``validate_inputs`` result: True, or one text listing every problem (ComfyUI answers HTTP 400)."""
    problems = widget_problems(cls, node, values) + [p for p in extra if p]
    return True if not problems else " | ".join(problems)


def require_widgets(cls, node: str, **values) -> None:
    """At run time (direct calls too): NaN/inf, types and dropdown values; raise the first problem.

    min/max are left to queue time (ComfyUI's own check, or check_widgets), as for every stock node."""
    problems = widget_problems(cls, node, values, ranges=False)
    if problems:
        raise NodeInputError(problems[0])


def check_depth_widgets(
    cls, node: str, depth: dict, finite_far: bool = False, extra: Iterable[str | None] = (), **values
) -> bool | str:
    """validate_inputs body of the stereo and mesh nodes: the widgets, then (when every depth widget is known)
    the one check of the depth mapping, ``common.depth_mapping``. ``depth``: the depth widgets by input name."""
    checked = check_widgets(cls, node, extra, **depth, **values)
    if checked is not True or any(depth.get(name) is None for name in DEPTH_WIDGETS):
        return checked
    args = {name: depth[name] for name in DEPTH_WIDGETS}
    return check_widgets(
        cls, node, [problem_of(depth_mapping, node, **args, invert_depth=False, finite_far=finite_far)]
    )


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

    The one check of the view inputs of every SyncDiffusion node, at queue time (``check_sync_widgets``) and at
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


def check_sync_widgets(
    cls, node: str, window=None, stride=None, window_height=None, stride_height=None, **values
) -> bool | str:
    """validate_inputs body of the SyncDiffusion nodes (KSampler, Sampler, Model Patch): widgets (sampler and
    scheduler names come from ComfyUI's own lists via the schema, fusion from the core's), then
    ``view_geometry`` (multiples of 8, stride <= window, stride_height <= window height)."""
    checked = check_widgets(
        cls, node, window=window, stride=stride, window_height=window_height, stride_height=stride_height, **values
    )
    if checked is True and window is not None and stride is not None:
        return check_widgets(
            cls, node, [problem_of(view_geometry, node, window, stride, window_height or 0, stride_height or 0)]
        )
    return checked


def check_tile_widgets(cls, node: str, tile_size=None, overlap=None, tiled=True, **values) -> bool | str:
    """validate_inputs body of the tiling nodes: widgets, then overlap < tile_size when tiled (tile_size > 0)."""
    checked = check_widgets(cls, node, tile_size=tile_size, overlap=overlap, **values)
    if checked is True and tiled and tile_size and overlap is not None:
        return check_widgets(cls, node, [problem_of(require_overlap_below_tile, node, tile_size, overlap)])
    return checked


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
