"""Every place the pack relies on a ComfyUI internal that is not a documented extension point, in one module.

Each function names the internal it touches; tests/test_comfy_compat.py pins each one on the installed ComfyUI, and
its failure message names the ComfyUI change to look for. Nothing here runs at import time.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator


# ---- gradients -----------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def differentiable_paths() -> Iterator[None]:
    """Inside the block ComfyUI takes its differentiable code paths: `comfy.model_management.in_training` (the
    flag ComfyUI's trainer sets). Since 0.3.7x ComfyUI routes e.g. Flux RoPE through comfy_kitchen's custom ops,
    which have no autograd formula, unless the flag is set. Restored on exit; absent flag = nothing to do."""
    import comfy.model_management as mm

    if not hasattr(mm, "in_training"):
        yield
        return
    previous = mm.in_training
    mm.in_training = True
    try:
        yield
    finally:
        mm.in_training = previous


# ---- samplers ------------------------------------------------------------------------------------------------------
def ksampler_parts(sampler) -> tuple:
    """(sampler_function, extra_options, inpaint_options) of a `comfy.samplers.KSAMPLER` (its constructor's
    arguments, kept as attributes of the same names)."""
    return sampler.sampler_function, sampler.extra_options, sampler.inpaint_options


def is_ksampler(sampler) -> bool:
    """A SAMPLER whose sampling is a k-diffusion function the SyncDiffusion loop can run in segments."""
    import comfy.samplers

    return isinstance(sampler, comfy.samplers.KSAMPLER) and callable(getattr(sampler, "sampler_function", None))


def guider_inner_model(guider):
    """The BaseModel a `CFGGuider` samples with (`guider.inner_model`, set by `CFGGuider.outer_sample`)."""
    return guider.inner_model


def guider_loaded_models(guider) -> list:
    """The extra models a `CFGGuider` loaded for sampling (ControlNets, ...: `guider.loaded_models`)."""
    return list(getattr(guider, "loaded_models", None) or [])


@functools.lru_cache(maxsize=1)
def brownian_tree_samplers() -> frozenset[str]:
    """k-diffusion sampler names whose default noise is a Brownian tree, read from ComfyUI's sampler functions: a
    `sample_<name>` whose source builds a `BrownianTreeNoiseSampler` or calls another such sampler function."""
    import comfy.k_diffusion.sampling as k_sampling

    sources = {}
    for attr in dir(k_sampling):
        func = getattr(k_sampling, attr)
        if attr.startswith("sample_") and inspect.isfunction(func):
            try:
                sources[attr.removeprefix("sample_")] = inspect.getsource(func)
            except (OSError, TypeError):
                continue
    found = {name for name, src in sources.items() if "BrownianTreeNoiseSampler" in src}
    changed = True
    while changed:  # samplers that delegate to a Brownian-tree sampler (dpmpp_2m_sde_heun -> dpmpp_2m_sde)
        changed = False
        for name, src in sources.items():
            if name not in found and any(f"sample_{other}(" in src for other in found):
                found.add(name)
                changed = True
    return frozenset(found)


# ---- outputs -------------------------------------------------------------------------------------------------------
def png_metadata(node_cls):
    """ComfyUI's PNG metadata (prompt and workflow) for a V3 node class, honouring --disable-metadata, as the stock
    SaveImage writes it (`comfy_api.latest.ui.ImageSaveHelper._create_png_metadata`)."""
    from comfy_api.latest import ui

    return ui.ImageSaveHelper._create_png_metadata(node_cls)


def guider_conds(guider) -> dict:
    """The processed conditioning a `CFGGuider` samples with (`guider.conds`: name -> list of cond dicts)."""
    return dict(getattr(guider, "conds", None) or {})


# ---- what the per-view sampler cannot honour ---------------------------------------------------------------------
_FLOW_METHODS = ("calculate_input", "calculate_denoised", "noise_scaling", "inverse_noise_scaling")


def flow_variant(model_sampling) -> str | None:
    """Why a CONST (flow-matching) model sampling is not plain flow x = (1 - t) x0 + t e; None when it is (or is not
    CONST at all). ComfyUI
    derives variants from CONST (IMG_TO_IMG_FLOW overrides the parametrisation; since 0.3.7x `noise_scale` scales
    the noise: x = (1 - t) x0 + t s e)."""
    import comfy.model_sampling

    const = comfy.model_sampling.CONST
    if not isinstance(model_sampling, const):
        return None
    for name in _FLOW_METHODS:
        owner = next((c for c in type(model_sampling).__mro__ if name in c.__dict__), None)
        if owner is not const:
            return f"{type(model_sampling).__name__} takes {name} from {getattr(owner, '__name__', owner)}, not CONST"
    scale = float(getattr(model_sampling, "noise_scale", 1.0))
    if scale != 1.0:
        return f"noise_scale {scale:g} (x = (1 - t) x0 + t * {scale:g} * noise)"
    return None


def multigpu_clones(model_patcher) -> list:
    """The per-device deep clones ComfyUI's MultiGPU support attached to a model (`additional_models["multigpu"]`;
    calc_cond_batch then evaluates them in threads under torch.no_grad()). Empty on ComfyUI without MultiGPU."""
    getter = getattr(model_patcher, "get_additional_models_with_key", None)
    return list(getter("multigpu")) if getter is not None else []


def uses_multigpu(model_options: dict) -> bool:
    """Whether a sampling run's model options route calc_cond_batch through ComfyUI's multi-GPU branch."""
    return "multigpu_clones" in model_options


def gligen_in(conditioning) -> bool:
    """Whether a CONDITIONING list (or processed cond dicts) carries GLIGEN boxes (the `gligen` key GLIGENTextBoxApply
    sets: ("position", gligen, [(cond, h, w, y, x), ...]) in latent*8 pixel units)."""
    for item in conditioning or []:
        options = item[1] if isinstance(item, (list, tuple)) and len(item) > 1 else item
        if isinstance(options, dict) and options.get("gligen") is not None:
            return True
    return False


_HINT_ATTRIBUTES = ("image", "inpaint_image")


def hint_model_patches(model_patcher) -> list[str]:
    """Model patches that carry a spatial hint image (model-patch controls: DiffSynth / Qwen / Z-Image control
    patches keep the IMAGE as `image`, scaled to the whole latent on every call), as "Type (patch list)" strings.
    They live in `model_options["transformer_options"]["patches"]` (ModelPatcher.set_model_patch)."""
    import torch

    patches = model_patcher.model_options.get("transformer_options", {}).get("patches", {})
    found = []
    for kind, items in patches.items():
        for patch in items:
            if any(isinstance(getattr(patch, a, None), torch.Tensor) for a in _HINT_ATTRIBUTES):
                found.append(f"{type(patch).__name__} ({kind} patch)")
    return found


# ---- blocks checkpointed in the gradient pass ----------------------------------------------------------------------
CHECKPOINT_BLOCK_PATHS = (
    ("comfy.ldm.modules.diffusionmodules.openaimodel", "ResBlock"),  # SD1/2/XL UNet
    ("comfy.ldm.modules.diffusionmodules.openaimodel", "VideoResBlock"),
    ("comfy.ldm.modules.attention", "SpatialTransformer"),
    ("comfy.ldm.modules.attention", "SpatialVideoTransformer"),
    ("comfy.ldm.flux.layers", "DoubleStreamBlock"),  # Flux
    ("comfy.ldm.flux.layers", "SingleStreamBlock"),
    ("comfy.ldm.modules.diffusionmodules.mmdit", "JointBlock"),  # SD3 MMDiT
    ("comfy.ldm.modules.diffusionmodules.model", "ResnetBlock"),  # KL VAE decoder
    ("comfy.ldm.modules.diffusionmodules.model", "AttnBlock"),
    ("comfy.taesd.taesd", "Block"),  # TAESD
)


def checkpoint_block_classes() -> dict[str, type | None]:
    """The ComfyUI block classes the gradient pass checkpoints, by name (None where this ComfyUI lacks one). The
    blocks are matched by class name (sync_core.checkpointing.outermost_modules), so subclasses of another name, e.g.
    a custom node's block, are not checkpointed: that costs memory, never correctness."""
    import importlib

    found = {}
    for module_name, name in CHECKPOINT_BLOCK_PATHS:
        try:
            found[name] = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            found[name] = None
    return found


# ---- VAE ---------------------------------------------------------------------------------------------------------
# comfy.sd.VAE.decode falls back to this private method on an out-of-memory error; nodes/ldm3d/ldm3d_vae.py overrides
# it (ComfyUI's version tiles with 3 output channels). tests/test_ldm3d_comfy_contract.py pins signature and call.
VAE_OOM_FALLBACK = "decode_tiled_"


# ---- ControlNet / T2I-Adapter chains (comfy.controlnet.ControlBase) --------------------------------------------------
def control_previous(control):
    """The next control in the chain (`previous_controlnet`), or None."""
    return control.previous_controlnet


def control_hint(control) -> tuple:
    """(hint image [B, C, H, W] as given, pixels per latent unit, upscale method) of a control: its
    `cond_hint_original`, `compression_ratio` (times its VAE's spatial compression for VAE-encoded hints) and
    `upscale_algorithm`, which ComfyUI uses to resize the hint to the latent it is applied to."""
    scale = control.compression_ratio
    if getattr(control, "vae", None) is not None:
        scale *= control.vae.spacial_compression_encode()
    return control.cond_hint_original, scale, control.upscale_algorithm


def control_copy_with_hint(control, hint, previous, model):
    """A copy of one control whose hint is `hint` (None: unchanged) chained to `previous`, prepared for sampling
    with `model` as comfy.samplers.pre_run_control prepares the originals (timestep range, sampling object)."""
    copy = control.copy()
    if hint is not None:
        copy.cond_hint_original = hint
    copy.cond_hint = None  # the resized hint ComfyUI caches: rebuilt from the new original
    if previous is not None:
        copy.set_previous_controlnet(previous)
    model_sampling = model.model_sampling
    copy.pre_run(model, lambda percent: model_sampling.percent_to_sigma(percent))
    return copy


def control_release(control) -> None:
    """Free a control copy's cached hints (ControlBase.cleanup) and its hint image."""
    control.cleanup()
    control.cond_hint_original = None


# ---- sampling hook -------------------------------------------------------------------------------------------------
# The model option comfy.samplers.sampling_function calls instead of calc_cond_batch, with a dict holding "conds",
# "input", "sigma", "model" and "model_options"; the view tiler is installed there (chaining any previous one).
CALC_COND_BATCH_HOOK = "sampler_calc_cond_batch_function"


def calc_cond_batch(model, conds, x, timestep, model_options: dict, previous=None) -> list:
    """ComfyUI's calc_cond_batch on `x`, or the hook that was installed before ours (`previous`), which sees
    itself as the hook again, as ComfyUI would call it."""
    import comfy.samplers

    options = dict(model_options)
    options.pop(CALC_COND_BATCH_HOOK, None)
    if previous is None:
        return comfy.samplers.calc_cond_batch(model, conds, x, timestep, options)
    options[CALC_COND_BATCH_HOOK] = previous
    return previous({"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": options})
