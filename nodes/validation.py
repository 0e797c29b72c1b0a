"""Reusable input checks for every node: queue-time widget checks, file containment, memory guards.

ComfyUI 0.3.75 lets NaN/inf through every FLOAT widget and does not check V3 dropdown (COMBO) values, and as
soon as a node's ``validate_inputs`` names an input, ComfyUI's own min/max check is skipped for that input. So
``check_widgets`` re-checks, from the node's own schema, everything the named inputs declare: finite floats,
min/max, dropdown membership. Nodes call it from ``validate_inputs`` (HTTP 400 at queue time, linked inputs
arrive as ``None`` and are skipped) and again at the top of ``execute`` (``require_widgets``), which covers
direct calls.

Files: ``resolve_input_file`` and ``output_folder`` keep every read and write inside ComfyUI's input, output
or temp folders after resolving links (``os.path.realpath``). Refusals never show a server path and never say
whether a path outside those folders exists. ``file_fingerprint`` hashes in chunks after checking the header.

Memory: ``memory_limit`` is ComfyUI's free-memory figure for the device (90 %; for accelerators the device's
total memory, since ComfyUI offloads models on demand), or the override in the environment variable
``SDL3D_MEMORY_LIMIT_MB`` (megabytes). ``require_memory`` refuses an estimate above it, naming limit and fix.
See docs/hardening.md.
"""

from __future__ import annotations

import hashlib
import math
import os
from typing import Iterable

from .common import NodeInputError, depth_mapping, input_error

ENV_MEMORY_LIMIT = "SDL3D_MEMORY_LIMIT_MB"
MAX_SYNC_VIEWS = 4096  # a 8192x2048 panorama at window 512 / stride 128 has 793; 4096 is already hours of work
MIN_LPIPS_RESOLUTION = 32  # LPIPS-alex pools 8x8 maps to nothing below 32 px, LPIPS-vgg below 16 px
# estimates from the layer widths / array counts in the code, not measurements:
LPIPS_BYTES_PER_PIXEL = {"vgg": 9000, "alex": 400}  # activations + gradients of one view/anchor pair, fp32
MESH_BYTES_PER_VERTEX = 320  # float64 grids, float32 buffers, uint32 faces, file buffers
HASH_CHUNK = 1 << 20
IMAGE_HEADERS = ((b"\x89PNG\r\n\x1a\n", "PNG"),)
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
            return str(input_error(node, name, value, "is not a finite number (NaN and infinity are refused)",
                                   f"enter a number between {low} and {high}" if low is not None and
                                   high is not None else f"use the default {spec.default}"))
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


def check_depth_widgets(cls, node: str, depth: dict, finite_far: bool = False, extra: Iterable[str | None] = (),
                        **values) -> bool | str:
    """validate_inputs body of the stereo and mesh nodes: the widgets, then (when every depth widget is known)
    the one check of the depth mapping, ``common.depth_mapping``. ``depth``: the depth widgets by input name."""
    checked = check_widgets(cls, node, extra, **depth, **values)
    if checked is not True or any(depth.get(name) is None for name in DEPTH_WIDGETS):
        return checked
    args = {name: depth[name] for name in DEPTH_WIDGETS}
    return check_widgets(cls, node, [problem_of(depth_mapping, node, **args, invert_depth=False,
                                                finite_far=finite_far)])


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
        require_choice(node, "sampler_name", sampler_name, comfy.samplers.SAMPLER_NAMES,
                       "pick a sampler from the list (e.g. euler, dpmpp_2m)")
    if scheduler is not None:
        require_choice(node, "scheduler", scheduler, comfy.samplers.KSampler.SCHEDULERS,
                       "pick a scheduler from the list (e.g. normal, karras, ddim_uniform)")


def require_finite_number(node: str, name: str, value, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise input_error(node, name, value, "is not a finite number", fix)
    return float(value)


# ---------------------------------------------------------------- files


_ESCAPE = "must name a file inside ComfyUI's {folder} folder (no '..', no absolute path, no link leaving the folder)"


def _inside(root: str, path: str) -> bool:
    root = os.path.realpath(root)
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([root, real]) == root
    except ValueError:  # different drives
        return False


def _relative_name_ok(name: str) -> bool:
    if not name or "\x00" in name or os.path.isabs(name) or os.path.splitdrive(name)[0] or name.startswith(("/", "\\")):
        return False
    parts = name.replace("\\", "/").split("/")
    return ".." not in parts


def resolve_input_file(node: str, name_input: str, name) -> str:
    """Real path of an image-combo value ('x.png', 'sub/x.png', 'x.png [output]'), inside input/output/temp.

    Refuses traversal, absolute paths and links leaving the folder with one message that shows no server path
    and is the same whether or not the target exists.
    """
    import folder_paths

    if not isinstance(name, str):
        raise input_error(node, name_input, name, "is not a file name", "pick a file from the list")
    plain, base = folder_paths.annotated_filepath(name.strip())
    folder = "input" if base is None else {folder_paths.get_output_directory(): "output",
                                           folder_paths.get_temp_directory(): "temp"}.get(base, "input")
    base = base or folder_paths.get_input_directory()
    plain = plain.strip()
    if not _relative_name_ok(plain) or not _inside(base, os.path.join(base, plain)):
        raise input_error(node, name_input, name, _ESCAPE.format(folder=folder),
                          f"upload the file (or copy it into ComfyUI's {folder} folder) and pick it from the list")
    path = os.path.realpath(os.path.join(base, plain))
    if not os.path.isfile(path):
        raise input_error(node, name_input, name, f"no such file in ComfyUI's {folder} folder",
                          "upload the file first and pick it from the list")
    return path


def sniff_image(path: str) -> str | None:
    """The image format named by the file's first bytes, or None."""
    with open(path, "rb") as f:
        head = f.read(16)
    for magic, kind in IMAGE_HEADERS:
        if head.startswith(magic):
            return kind
    return None


def require_image_file(node: str, name_input: str, name, kinds: tuple[str, ...] = ("PNG",)) -> str:
    """``resolve_input_file`` plus a header check, so a non-image is refused before anything parses it."""
    path = resolve_input_file(node, name_input, name)
    if sniff_image(path) not in kinds:
        raise input_error(node, name_input, name, f"is not a {' or '.join(kinds)} file (checked by its header)",
                          "pick a 16-bit greyscale PNG (e.g. one written by Save Depth PNG 16-bit)")
    return path


def file_fingerprint(path: str) -> str:
    """sha256 of a file read in 1 MiB chunks (never the whole file at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prefix_problem(node: str, name_input: str, prefix, root: str | None = None) -> str | None:
    """Why a filename_prefix cannot be used under ComfyUI's output folder (None when it can)."""
    import folder_paths

    root = root or folder_paths.get_output_directory()
    fix = "use a relative prefix such as 'ldm3d/depth16' (no '..', no absolute path, no link leaving the folder)"
    if not isinstance(prefix, str) or not prefix.strip():
        return str(input_error(node, name_input, prefix, "is empty (it would write a hidden, nameless file)", fix))
    if not _relative_name_ok(prefix):
        return str(input_error(node, name_input, prefix, "would write outside ComfyUI's output folder", fix))
    normalised = os.path.normpath(prefix)
    base = os.path.basename(normalised)
    if not base or base.startswith(".") or prefix.endswith(("/", "\\")):
        return str(input_error(node, name_input, prefix, "has no file name part (or a hidden one starting with '.')",
                               "end the prefix with a name, e.g. 'ldm3d/depth16'"))
    folder = os.path.join(root, os.path.dirname(normalised))
    if not _inside(root, folder):
        return str(input_error(node, name_input, prefix, "would write outside ComfyUI's output folder", fix))
    return None


def output_folder(node: str, name_input: str, prefix, width: int = 0, height: int = 0):
    """``folder_paths.get_save_image_path`` after the containment check (links resolved, also after %date%).

    Returns (folder, filename, counter, subfolder). Raises NodeInputError naming the input; no server path.
    """
    import folder_paths

    root = folder_paths.get_output_directory()
    problem = prefix_problem(node, name_input, prefix, root)
    if problem is None and "%" in prefix:
        expanded = prefix
        for var, val in (("%width%", str(width)), ("%height%", str(height))):
            expanded = expanded.replace(var, val)
        problem = prefix_problem(node, name_input, expanded, root) if "%" not in expanded else None
    if problem:
        raise NodeInputError(problem)
    folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, root, width, height)
    if not _inside(root, folder):
        raise input_error(node, name_input, prefix, "would write outside ComfyUI's output folder",
                          "use a relative prefix without links that leave the output folder")
    return folder, filename, counter, subfolder


def output_file(node: str, name_input: str, prefix, folder: str, name: str) -> str:
    """Full path of one file to write; refuses a name that is (or links) outside the output folder."""
    import folder_paths

    path = os.path.join(folder, name)
    if os.path.islink(path) or not _inside(folder_paths.get_output_directory(), path):
        raise input_error(node, name_input, prefix, f"the file name {name!r} is taken by a link",
                          "remove the link from the output folder or change the prefix")
    return path


# ---------------------------------------------------------------- memory


def memory_limit(device=None) -> tuple[int, str]:
    """(bytes, how it was chosen): the SDL3D_MEMORY_LIMIT_MB override, else ComfyUI's memory figures."""
    override = os.environ.get(ENV_MEMORY_LIMIT, "").strip()
    if override:
        try:
            megabytes = float(override)
        except ValueError:
            megabytes = math.nan
        if math.isfinite(megabytes) and megabytes > 0:
            return int(megabytes * 2 ** 20), f"{ENV_MEMORY_LIMIT}={override}"
    import comfy.model_management as mm
    import torch

    device = device or mm.get_torch_device()
    if isinstance(device, str):
        device = torch.device(device)
    if getattr(device, "type", "cpu") == "cpu":
        return int(0.9 * mm.get_free_memory(device)), "90% of the free system memory"
    return int(0.9 * mm.get_total_memory(device)), f"90% of the {device.type} memory"


def format_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def fits_memory(estimate: float, device=None) -> bool:
    return estimate <= memory_limit(device)[0]


def require_memory(node: str, name: str, value, estimate: float, fix: str, device=None) -> None:
    """Refuse before allocating when ``estimate`` bytes exceed the memory limit."""
    limit, source = memory_limit(device)
    if estimate > limit:
        raise input_error(node, name, value, f"needs about {format_bytes(estimate)}, more than the limit "
                          f"{format_bytes(limit)} ({source}; override with {ENV_MEMORY_LIMIT})", fix)


def lpips_memory(net: str, resolution: int) -> int:
    """Bytes LPIPS needs for one view/anchor pair at ``resolution`` x ``resolution`` (with gradients)."""
    return int(LPIPS_BYTES_PER_PIXEL.get(net, LPIPS_BYTES_PER_PIXEL["vgg"]) * resolution * resolution)


def mesh_memory(mesh_width: int, mesh_height: int) -> int:
    return int(MESH_BYTES_PER_VERTEX * (mesh_width + 1) * mesh_height)


def require_lpips_resolution(node: str, net: str, resolution: int) -> None:
    if 0 < resolution < MIN_LPIPS_RESOLUTION:
        raise input_error(node, "resolution", resolution, f"is too small for LPIPS (its pooling layers need at "
                          f"least {MIN_LPIPS_RESOLUTION} px)", f"use 0 (native) or {MIN_LPIPS_RESOLUTION} or more")
    if resolution > 0:
        require_memory(node, "resolution", resolution, lpips_memory(net, resolution),
                       "lower the resolution (256 is ~4x cheaper than 512), or use net = alex")


def sync_view_count(latent_h: int, latent_w: int, window: tuple[int, int], stride: tuple[int, int],
                    circular: bool) -> int:
    """Number of views of the grid sync_core.views.build_view_grid would build (counted, not built)."""
    from ..sync_core import views as core_views

    rows = len(core_views.axis_offsets(latent_h, window[0], stride[0], False, "height"))
    cols = len(core_views.axis_offsets(latent_w, window[1], stride[1], circular, "width"))
    return rows * cols


def require_view_count(node: str, latent_h: int, latent_w: int, settings) -> int:
    """Refuse grids with more than MAX_SYNC_VIEWS views before anything is allocated."""
    from ..sync_core import views as core_views

    window, stride, _notes = core_views.fit_window(latent_h, latent_w, settings.window, settings.stride)
    count = sync_view_count(latent_h, latent_w, window, stride, settings.circular)
    if count > MAX_SYNC_VIEWS:
        raise input_error(node, "stride", settings.stride[1] * 8, f"gives {count} views over a {latent_w * 8}x"
                          f"{latent_h * 8} px image (window {settings.window[1] * 8}); the limit is {MAX_SYNC_VIEWS}",
                          "raise the stride (a quarter of the window is typical), raise the window, or sample a "
                          "smaller image and upscale it")
    return count


def schedule_input(message: str, **values) -> tuple[str, object]:
    """Which sync input a sync_core.SyncSchedule error is about (its messages start 'sync weight', 'sync decay'...)."""
    for name in ("sync_decay", "sync_freq", "sync_steps", "sync_weight"):
        if name.replace("_", " ") in message:
            return name, values.get(name)
    return "sync_weight", values.get("sync_weight")


def view_geometry(node: str, window: int, stride: int, window_height: int = 0, stride_height: int = 0
                  ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pixel inputs -> ((window h, w), (stride h, w)) in latent units; 0 heights = the width values.

    The one check of the view inputs of every SyncDiffusion node, at queue time (``check_sync_widgets``) and at
    run time; the core's own guards (``sync_core.views.axis_offsets``) then never see a bad value from a node."""
    for name, value in (("window", window), ("stride", stride), ("window_height", window_height),
                        ("stride_height", stride_height)):
        if value % 8 != 0 or value < 0 or (value == 0 and name in ("window", "stride")):
            raise input_error(node, name, value, "must be a positive multiple of 8 pixels (one latent cell)",
                              f"use {max(8, value // 8 * 8)}")
    if not 0 < stride <= window:
        raise input_error(node, "stride", stride, f"must be between 8 and the window ({window})",
                          "use a stride <= window (128 for a 512 window, as in the paper)")
    win_h, stride_h = window_height or window, stride_height or stride
    if stride_h > win_h:
        raise input_error(node, "stride_height" if stride_height else "stride", stride_h,
                          f"the vertical stride must be <= the view height ({win_h})",
                          "lower stride_height (0 = same as stride) or raise window_height")
    return (win_h // 8, window // 8), (stride_h // 8, stride // 8)


def check_sync_widgets(cls, node: str, window=None, stride=None, **values) -> bool | str:
    """validate_inputs body of the SyncDiffusion nodes: widgets (sampler/scheduler names come from ComfyUI's own
    lists via the schema), then ``view_geometry`` (stride <= window, multiples of 8)."""
    checked = check_widgets(cls, node, window=window, stride=stride, **values)
    if checked is True and window is not None and stride is not None:
        return check_widgets(cls, node, [problem_of(view_geometry, node, window, stride)])
    return checked
