"""Memory glue for the SyncDiffusion sampler: batch plans from ComfyUI's free-memory figures, per-view cost
estimates, which ComfyUI blocks to checkpoint in the gradient pass, and the fast path's tiny loss decoder.

The arithmetic lives in sync_core.batching; this module only reads ComfyUI objects (free memory, the model's own
`memory_required`, the VAE's `memory_used_decode`) and, on CUDA, measures what a gradient batch really used so the
next batches are planned from the measurement (`MeasuredGradientPlanner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.model_management
import comfy.sd
import comfy.utils
import folder_paths
import torch

from ...sync_core import batching
from ..shared import comfy_compat, memory_guards, model_cache
from ..shared.model_folders import folder_label

GIB = 1024**3
# Auto mode batches at most this many views in the gradient pass: past ~4 views a batch already fills a GPU, so
# more views only cost memory (each batched view keeps its block inputs until its backward pass).
AUTO_GRADIENT_VIEW_CAP = 4
# Gradient-pass cost of one view relative to the inference estimates ComfyUI gives (recompute + backward of the
# largest block with checkpointing; the whole graph without). Used until a CUDA batch has been measured.
CHECKPOINTED_FACTOR = 2.0
PLAIN_FACTOR = 6.0
# UNet / DiT / VAE / TAESD block classes that are checkpointed in the gradient pass (outermost match wins); the
# classes themselves are looked up in ComfyUI by nodes/shared/comfy_compat.checkpoint_block_classes.
CHECKPOINT_BLOCKS = tuple(name for _module, name in comfy_compat.CHECKPOINT_BLOCK_PATHS)


@dataclass(frozen=True)
class MemoryPlan:
    """What the planner decided for one sampling run (`describe` is logged at INFO when the run starts)."""

    denoise_batch: int
    gradient_planner: batching.GradientBatchPlanner
    budget_bytes: float
    auto: bool

    def describe(self, n_views: int) -> str:
        grad = self.gradient_planner
        return (
            f"{n_views} views; denoise batches of {self.denoise_batch}; gradient batches of "
            f"{grad(max(1, n_views - 1))} (est. {grad.per_view_bytes / GIB:.2f} GiB/view) under "
            f"{'auto ' if self.auto else ''}budget {self.budget_bytes / GIB:.1f} GiB"
        )


def device_budget(device: torch.device, budget_gib: float) -> tuple[float, bool]:
    """(bytes the views may use on `device`, auto?). Auto: ComfyUI's free memory minus its inference reserve, at
    most memory_guards.memory_limit (SDL3D_MEMORY_LIMIT_MB). A user budget is the peak for the whole sampler on
    CUDA, so what is allocated already counts against it."""
    if budget_gib and budget_gib > 0:
        used = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        return max(0.0, budget_gib * GIB - used), False
    free = comfy.model_management.get_free_memory(device)
    auto = min(free - comfy.model_management.minimum_inference_memory(), memory_guards.memory_limit(device)[0])
    return max(0.0, auto), True


def denoise_cost_per_view(model, batch: int, channels: int, height: int, width: int) -> float:
    """ComfyUI's own estimate for one view (cond + uncond), with ComfyUI's 1.5 batching margin."""
    return 1.5 * float(model.memory_required([2 * batch, channels, height, width]))


def gradient_cost_per_view(
    model, vae, batch: int, channels: int, height: int, width: int, checkpointing: bool
) -> float:
    """Estimated bytes one view adds to the gradient pass (denoiser + decoder + LPIPS graphs)."""
    factor = CHECKPOINTED_FACTOR if checkpointing else PLAIN_FACTOR
    unet = float(model.memory_required([2 * batch, channels, height, width]))
    decoder = float(vae.memory_used_decode([batch, channels, height, width], vae.vae_dtype))
    pixels = batch * height * width * vae.spacial_compression_decode() ** 2
    lpips = pixels * 64 * 4 * 4.0  # VGG's widest full-resolution activations, fp32, a few of them
    return factor * (unet + decoder + lpips)


class MeasuredGradientPlanner(batching.GradientBatchPlanner):
    """A GradientBatchPlanner that, on CUDA, measures each batch's peak and re-plans the next from it."""

    def __init__(self, *args, device: torch.device | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.device = device
        self._pending: tuple[int, int] | None = None

    def _measuring(self) -> bool:
        return self.device is not None and self.device.type == "cuda" and torch.cuda.is_available()

    def __call__(self, remaining: int) -> int:
        if self._measuring():
            if self._pending is not None:
                views, base = self._pending
                self.observe(views, torch.cuda.max_memory_allocated(self.device) - base)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        n = super().__call__(remaining)
        if self._measuring():
            self._pending = (n, base)
        return n

    def shrink(self, views: int) -> None:
        super().shrink(views)
        self._pending = None
        comfy.model_management.soft_empty_cache()


def plan_memory(
    model,
    vae,
    device: torch.device,
    n_views: int,
    batch: int,
    channels: int,
    height: int,
    width: int,
    view_batch_size: int,
    budget_gib: float,
    checkpointing: bool,
) -> MemoryPlan:
    """Both batch plans for one run. `view_batch_size` > 0 fixes both; 0 plans them from the budget."""
    budget, auto = device_budget(device, budget_gib)
    grad_cost = gradient_cost_per_view(model, vae, batch, channels, height, width, checkpointing)
    override = int(view_batch_size) if view_batch_size and view_batch_size > 0 else None
    planner = MeasuredGradientPlanner(
        budget_bytes=budget,
        per_view_bytes=grad_cost,
        cap=AUTO_GRADIENT_VIEW_CAP if auto else None,
        override=override,
        device=device,
    )
    if override:
        denoise = min(override, n_views)
    else:
        fit = batching.views_that_fit(budget, denoise_cost_per_view(model, batch, channels, height, width), n_views)
        denoise = batching.balanced_batch_size(n_views, fit)
    return MemoryPlan(denoise_batch=denoise, gradient_planner=planner, budget_bytes=budget, auto=auto)


def checkpoint_targets(*roots) -> list[torch.nn.Module]:
    """The blocks to checkpoint in the gradient pass, from the diffusion model and the loss decoder."""
    from ...sync_core.checkpointing import outermost_modules

    found = []
    for root in roots:
        if root is not None:
            found.extend(outermost_modules(root, CHECKPOINT_BLOCKS))
    return found


def load_tiny_decoder(node: str, model):
    """The TAESD-family decoder matching the model's latent space from models/vae_approx, as a ComfyUI VAE (cached)."""
    from ..shared.common import input_error

    latent_format = model.get_model_object("latent_format")
    name = getattr(latent_format, "taesd_decoder_name", None)
    if not name:
        raise input_error(
            node,
            "sync_fast",
            True,
            f"no tiny decoder (TAESD) exists for the {type(latent_format).__name__} latent space",
            "turn sync_fast off",
        )
    files = [f for f in folder_paths.get_filename_list("vae_approx") if f.startswith(name + ".")]
    if not files:
        raise input_error(
            node,
            "sync_fast",
            True,
            f"the fast path decodes with '{name}' (TAESD), which is missing",
            f"put '{name}.safetensors' into {folder_label('vae_approx')}, or connect a TAESD VAE to "
            "'vae' and turn sync_fast off",
        )
    path = folder_paths.get_full_path_or_raise("vae_approx", files[0])
    scale, shift = float(latent_format.scale_factor), float(getattr(latent_format, "shift_factor", 0.0) or 0.0)

    def build():
        sd = {f"taesd_decoder.{k}": v for k, v in comfy.utils.load_torch_file(path).items()}
        sd["vae_scale"], sd["vae_shift"] = torch.tensor(scale), torch.tensor(shift)
        return comfy.sd.VAE(sd=sd)

    # read once per file (and latent scaling); comfy.sd.VAE has its own ModelPatcher
    return model_cache.cached(model_cache.file_key("taesd", path, scale, shift), build)


def fast_lpips_resolution(window_px: int) -> int:
    """LPIPS resolution of the fast path: the shorter side at 256 px (4x fewer pixels than a 512 window)."""
    return int(min(256, window_px)) if window_px > 0 else 256
