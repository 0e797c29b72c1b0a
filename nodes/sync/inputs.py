"""Pieces the SyncDiffusion nodes share: their inputs, LPIPS loading, settings from widgets, model/VAE checks.

The KSampler, the SAMPLER node and the Model Patch build their schemas from these, so an input means the same on
every node; `sync_settings` turns widget values into the sampler's `SyncSettings` (pixels -> latent units).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import comfy.samplers
import folder_paths
import torch
from comfy_api.latest import io

from ...sync_core import fusion as core_fusion
from ...sync_core import perceptual as core_perceptual
from ...sync_core import sync as core_sync
from ..shared import comfy_compat, memory_guards, model_cache, validation
from ..shared.common import input_error
from ..shared.model_folders import LPIPS_FOLDER, folder_label
from .sampler import SyncSettings, is_supported_model_sampling

LPIPS_TYPE = io.Custom("SDL3D_LPIPS")
ANCHORS = ["middle", "first", "last"]
LPIPS_NETS = ["vgg", "alex"]
SAMPLER_NAME_TOOLTIP = (
    "The base sampler that takes the steps (any ComfyUI sampler). euler with the ddim_uniform scheduler is the "
    "paper's DDIM."
)


@dataclass(frozen=True)
class LPIPSChoice:
    """What the LPIPS loader hands to the samplers: the network and the resolution LPIPS runs at (0 = native)."""

    net: str
    model: torch.nn.Module
    resolution: int = 0
    patcher: object = None  # the ModelPatcher ComfyUI places and frees `model` with (nodes/shared/model_cache.py)


def load_lpips(node: str, net: str = "vgg", resolution: int = 0, input_name: str = "lpips") -> LPIPSChoice:
    """Build LPIPS from `models/lpips/` (or the torch hub cache); a clear error when the backbone is missing.

    `input_name` is the input the error names: 'net' on the loader, 'lpips' (not connected) on the samplers.
    Read once per backbone file (model_cache: kept while the file is unchanged), behind a ModelPatcher.
    """
    search = folder_paths.get_folder_paths(LPIPS_FOLDER) if LPIPS_FOLDER in folder_paths.folder_names_and_paths else []
    path = core_perceptual.find_backbone_weights(net, search)
    if path is None:
        file = core_perceptual.BACKBONE_FILES[core_perceptual.normalize_net_name(net)]
        raise input_error(
            node,
            input_name,
            net,
            f"the LPIPS backbone file '{file}' is missing (searched the lpips model folders and the torch hub cache)",
            f"put torchvision's '{file}' into {folder_label(LPIPS_FOLDER)} (nothing is downloaded)",
        )
    name = core_perceptual.normalize_net_name(net)
    patcher = model_cache.cached(
        model_cache.file_key("lpips", path, name),
        lambda: model_cache.managed(core_perceptual.build_lpips(name, backbone_path=path)),
    )
    return LPIPSChoice(net=net, model=patcher.model, resolution=int(resolution), patcher=patcher)


def sampler_inputs(steps: int, sampler: str, scheduler: str, tooltips: dict[str, str]) -> list:
    """seed, steps, cfg, sampler_name, scheduler: the stock KSampler's widgets (ids and ranges), shared by the
    SyncDiffusion KSampler and the Sphere KSampler; each gives its defaults and what its tooltips say."""
    return [
        io.Int.Input(
            "seed",
            default=0,
            min=0,
            max=0xFFFFFFFFFFFFFFFF,
            control_after_generate=True,
            tooltip=tooltips["seed"],
        ),
        io.Int.Input("steps", default=steps, min=1, max=10000, tooltip=tooltips["steps"]),
        io.Float.Input("cfg", default=7.5, min=0.0, max=100.0, step=0.1, round=0.01, tooltip=tooltips["cfg"]),
        sampler_name_input(sampler, tooltips["sampler_name"]),
        io.Combo.Input(
            "scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default=scheduler, tooltip=tooltips["scheduler"]
        ),
    ]


def sampler_name_input(default: str, tooltip: str = SAMPLER_NAME_TOOLTIP):
    return io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default=default, tooltip=tooltip)


def window_inputs(window_tooltip: str, stride_tooltip: str) -> list:
    """The view size and step in pixels (window, stride) of every SyncDiffusion node."""
    return [
        io.Int.Input("window", default=512, min=64, max=8192, step=8, tooltip=window_tooltip),
        io.Int.Input("stride", default=128, min=8, max=8192, step=8, tooltip=stride_tooltip),
    ]


def view_batch_input(tooltip: str):
    return io.Int.Input("view_batch_size", default=0, min=0, max=256, tooltip=tooltip)


def sync_inputs() -> list:
    """The view and sync widgets of the KSampler and the SAMPLER node (sampler_name follows on the SAMPLER node)."""
    return [
        *window_inputs(
            "View (window) width in pixels (and height unless window_height is set). 512 for "
            "SD1.x/SD2-base (the paper), 768 for SD2 768-v, 1024 for SDXL. A window larger than "
            "the image on an axis is clamped to the image (noted in the log).",
            "Horizontal distance between neighbouring views in pixels (and vertical unless "
            "stride_height is set; the paper: 128 = 16 latent). Smaller = more overlap, more "
            "coherent, slower. Must be <= window.",
        ),
        io.Float.Input(
            "sync_weight",
            default=20.0,
            min=0.0,
            max=100000.0,
            step=0.5,
            tooltip="w: the LPIPS gradient step size pulling each view toward the anchor (paper: 20). "
            "0 = plain MultiDiffusion.",
        ),
        io.Float.Input(
            "sync_decay",
            default=0.95,
            min=0.01,
            max=1.0,
            step=0.005,
            tooltip="Weight decay per step: w * decay^k (0.95 paper, 0.99 demos). k is rescaled to a "
            "50-step schedule, so 20 steps decay like 50.",
        ),
        io.Int.Input(
            "sync_freq",
            default=1,
            min=1,
            max=1000,
            tooltip="Synchronise every N-th step (official sync_freq; step i syncs when (i+1) % N == 0).",
        ),
        io.Int.Input(
            "sync_steps",
            default=10,
            min=0,
            max=10000,
            tooltip="Synchronise only during the first N sampler steps (official sync_thres: 5-10 in "
            "the demos; >= steps = every step, the paper's signature). Each sync step costs about "
            "4-7x a plain step.",
        ),
        io.Combo.Input(
            "anchor",
            options=ANCHORS,
            default="middle",
            tooltip="The view every other view is pulled toward: the middle view (official), the "
            "first (leftmost/top-left) or the last.",
        ),
        io.Boolean.Input(
            "circular",
            default=False,
            tooltip="360 panorama: views wrap over the right edge back to the left (horizontal only), "
            "so the left and right borders join seamlessly.",
        ),
        view_batch_input(
            "Views per model call. 0 = auto: the denoising passes batch as many views as fit in "
            "free memory (ComfyUI's own estimate), the sync gradient pass batches views under "
            "memory_budget_gb (at most 4 in auto; measured and re-planned on CUDA). A number "
            "fixes both. The result does not depend on it. Area, mask and ControlNet "
            "conditioning are evaluated one view at a time."
        ),
    ]


def view_shape_inputs() -> list:
    """Optional, appended last (older saved graphs keep their square windows and uniform fusion)."""
    return [
        io.Int.Input(
            "window_height",
            default=0,
            min=0,
            max=8192,
            step=8,
            optional=True,
            tooltip="View height in pixels; 0 = same as window (square). E.g. window 1024 + "
            "window_height 512 for SDXL on a 2048x512 strip.",
        ),
        io.Int.Input(
            "stride_height",
            default=0,
            min=0,
            max=8192,
            step=8,
            optional=True,
            tooltip="Vertical distance between views in pixels; 0 = same as stride. Must be <= the view height.",
        ),
        io.Combo.Input(
            "fusion",
            options=list(core_fusion.FUSIONS),
            default="uniform",
            optional=True,
            tooltip="How overlapping views are merged: uniform = MultiDiffusion mean (the paper); "
            "gaussian = Mixture of Diffusers (each view weighted by a Gaussian centred on it, "
            "softer seams); spot = SpotDiffusion (the view grid is shifted by a seeded random "
            "offset each step; wraps on circular panoramas; fast with stride = window).",
        ),
    ]


def lpips_input():
    return LPIPS_TYPE.Input(
        "lpips",
        optional=True,
        tooltip="LPIPS from the SyncDiffusion LPIPS Loader (default: LPIPS-VGG from models/lpips, as in the paper).",
    )


def speed_inputs() -> list:
    """Optional (older saved graphs run unchanged with the defaults)."""
    return [
        io.Float.Input(
            "memory_budget_gb",
            default=0.0,
            min=0.0,
            max=4096.0,
            step=0.5,
            optional=True,
            tooltip="Peak device memory the sampler may use (GiB, weights included) when planning view "
            "batches. 0 = auto: ComfyUI's free memory. Lower it to share the GPU; one view at a "
            "time is the floor.",
        ),
        io.Boolean.Input(
            "sync_fast",
            default=False,
            optional=True,
            tooltip="Fast sync pass: the LPIPS loss decodes with the model's tiny TAESD-family decoder "
            "(taesd, taesdxl, taesd3 or taef1) from models/vae_approx instead of the VAE "
            "(~18x cheaper), and LPIPS runs at 256 px "
            "unless the LPIPS Loader sets a resolution. Changes the loss slightly (TAESD is "
            "close to, not equal to, the VAE), so results differ from the paper's exact "
            "update; the final image is still decoded by your VAE Decode.",
        ),
    ]


def build_sampler(node: str, sampler_class, sampler_name: str, settings: SyncSettings, vae, lpips, base=None):
    """The SAMPLER object; LPIPS is loaded here (so a missing file is reported by this node) only if it is used.
    `base`: a configured SAMPLER that replaces `sampler_name`."""
    if lpips is None and settings.schedule.weight > 0 and settings.schedule.steps > 0:
        lpips = load_lpips(node)
    sampler = sampler_class(
        sampler_name, settings, vae, lpips.patcher if lpips else None, lpips.resolution if lpips else 0, base=base
    )
    sampler.node_name = node  # the node its log lines and errors name
    return sampler


def sync_settings(
    node: str,
    window: int,
    stride: int,
    sync_weight: float,
    sync_decay: float,
    sync_freq: int,
    sync_steps: int,
    anchor: str,
    circular: bool,
    view_batch_size: int,
    memory_budget_gb: float = 0.0,
    sync_fast: bool = False,
    window_height: int = 0,
    stride_height: int = 0,
    fusion: str = "uniform",
) -> SyncSettings:
    window_hw, stride_hw = validation.view_geometry(node, window, stride, window_height, stride_height)
    if fusion not in core_fusion.FUSIONS:
        raise input_error(node, "fusion", fusion, "unknown fusion", f"use one of {list(core_fusion.FUSIONS)}")
    if anchor not in ANCHORS:
        raise input_error(node, "anchor", anchor, "unknown anchor", f"use one of {ANCHORS}")
    try:
        schedule = core_sync.SyncSchedule(
            weight=float(sync_weight), decay=float(sync_decay), freq=int(sync_freq), steps=int(sync_steps)
        )
    except ValueError as err:
        name, value = validation.schedule_input(
            str(err), sync_weight=sync_weight, sync_decay=sync_decay, sync_freq=sync_freq, sync_steps=sync_steps
        )
        raise input_error(node, name, value, str(err), "use the defaults (20, 0.95, 1, 10)") from None
    validation.require_view_batch_size(node, view_batch_size)
    budget = float(memory_budget_gb)
    if not math.isfinite(budget) or budget < 0:
        raise input_error(
            node,
            "memory_budget_gb",
            memory_budget_gb,
            "must be a finite number >= 0",
            "use 0 (auto: ComfyUI's free memory) or a budget in GiB such as 8",
        )
    if budget > 0:
        budget = memory_guards.capped_budget_gib(node, "memory_budget_gb", budget)
    return SyncSettings(
        window=window_hw,
        stride=stride_hw,
        schedule=schedule,
        anchor=anchor,
        circular=bool(circular),
        view_batch_size=int(view_batch_size),
        memory_budget_gb=budget,
        fast=bool(sync_fast),
        fusion=fusion,
    )


def check_model_and_vae(node: str, model, vae) -> None:
    model_sampling = model.get_model_object("model_sampling")
    variant = comfy_compat.flow_variant(model_sampling)
    if variant is not None:
        raise input_error(
            node,
            "model",
            variant,
            "SyncDiffusion maps its update through plain flow matching x = (1 - t) x0 + t noise; this model's "
            "flow sampling is a variant, so the update would be scaled wrongly",
            "use the model with its stock flow sampling (no ModelSampling node that changes it), or sample it "
            "without SyncDiffusion",
        )
    if not is_supported_model_sampling(model_sampling):
        raise input_error(
            node,
            "model",
            type(model_sampling).__name__,
            "SyncDiffusion's gradient step needs a noise level it can map to VP coordinates: eps, "
            "v-prediction, EDM or flow-matching (CONST) sampling; this model uses another "
            "parametrisation",
            "use an SD1.x/SD2.x/SDXL, SD3.x or Flux-family model",
        )
    if vae is None or not hasattr(vae, "first_stage_model") or not hasattr(vae, "latent_channels"):
        raise input_error(node, "vae", vae, "not a ComfyUI VAE", "connect the checkpoint's VAE or a TAESD VAE")
    model_channels = model.get_model_object("latent_format").latent_channels
    if vae.latent_channels != model_channels:
        raise input_error(
            node,
            "vae",
            f"VAE with {vae.latent_channels}-channel latents",
            f"does not match the model's {model_channels}-channel latent space",
            "connect the VAE that belongs to the "
            "model (SDXL: the SDXL VAE or TAESDXL; Flux: ae.safetensors or taef1; SD3.x: the SD3 VAE or taesd3)",
        )


def check_geometry(node: str, latent: torch.Tensor, settings: SyncSettings, model, vae=None) -> SyncSettings:
    """Called where the latent is known: channels matching the model, the view count (a window larger than the
    image is clamped by the sampler, see sync_core.views.fit_window), and a fixed view_batch_size lowered to
    what fits (ComfyUI's per-view estimates; the result does not depend on it). Returns the settings to use."""
    model_channels = model.get_model_object("latent_format").latent_channels
    if latent.ndim != 4:
        raise input_error(
            node,
            "latent_image",
            latent,
            f"is {latent.ndim}-D; SyncDiffusion needs an image latent [batch, channels, height, width]",
            "use Empty Latent Image or VAE Encode (no video latents)",
        )
    if latent.shape[1] != model_channels:
        raise input_error(
            node,
            "latent_image",
            latent,
            f"has {latent.shape[1] if latent.ndim > 1 else '?'} channels, the model expects {model_channels}",
            "use Empty Latent Image or VAE Encode with this model's VAE",
        )
    batch, channels, latent_h, latent_w = latent.shape
    count = memory_guards.require_view_count(
        node, latent_h, latent_w, settings.window, settings.stride, settings.circular
    )
    if settings.view_batch_size <= 1:
        return settings
    from ...sync_core import views as core_views
    from . import memory_plan

    (win_h, win_w), _, _ = core_views.fit_window(latent_h, latent_w, settings.window, settings.stride)
    cost = memory_plan.denoise_cost_per_view(model.model, batch, channels, win_h, win_w)
    if vae is not None and settings.schedule.weight > 0 and settings.schedule.steps > 0:
        grad = memory_plan.gradient_cost_per_view(
            model.model, vae, batch, channels, win_h, win_w, settings.gradient_checkpointing
        )
        cost = max(cost, grad)
    wanted = min(settings.view_batch_size, count)
    fit = memory_guards.fit_batch(
        node, "view_batch_size", settings.view_batch_size, wanted, cost, "views", model.load_device
    )
    return settings if fit == wanted else dataclasses.replace(settings, view_batch_size=fit)
