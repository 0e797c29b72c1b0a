"""SyncDiffusion Model Patch: MultiDiffusion / Mixture of Diffusers / SpotDiffusion over views for ANY sampler node.

The node returns a clone of the MODEL with one SAMPLER_SAMPLE wrapper (comfy.patcher_extension, keyed
"sdl3d_view_tiler"); nothing global is patched. For each sampling run the wrapper builds the view grid from the
latent, installs nodes/sync/view_tiler.ViewTiler as that run's `sampler_calc_cond_batch_function` (chaining any
function already there) and frees it afterwards. So stock KSampler, KSamplerAdvanced, SamplerCustom(Advanced) and
third-party samplers evaluate the model view by view and merge the predictions; CFG and the sampler are ComfyUI's.

The LPIPS sync step is not part of the patch: it needs a gradient pass through the model and the VAE between two
sampler steps, which no model hook can do faithfully. The pack's SyncDiffusion KSampler / Sampler nodes do it
(they ignore this patch and tile with their own settings).
"""

from __future__ import annotations

import logging

import comfy.patcher_extension
from comfy_api.latest import io

from ...sync_core import batching
from ...sync_core import views as core_views
from ..shared import comfy_compat, memory_guards, validation
from ..shared.common import CATEGORY_SAMPLING, input_error, node_name
from . import memory_plan
from .guards import check_unsupported
from .inputs import view_batch_input, view_shape_inputs, window_inputs
from .sampler import SyncDiffusionSampler
from .view_tiler import install_view_tiler

WRAPPER_KEY = "sdl3d_view_tiler"


class ViewTilerWrapper:
    """SAMPLER_SAMPLE wrapper: one ViewTiler per sampling run (views in latent units, (height, width))."""

    def __init__(
        self,
        window: tuple[int, int],
        stride: tuple[int, int],
        circular: bool,
        fusion: str,
        view_batch_size: int,
        node: str,
    ):
        self.window, self.stride, self.circular = window, stride, circular
        self.fusion, self.view_batch_size = fusion, int(view_batch_size)
        self.node = node  # the node its log lines and errors name (the patch node's schema name)

    def __call__(self, executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
        if isinstance(executor.class_obj, SyncDiffusionSampler):  # tiles (and syncs) with its own settings
            logging.info("%s: ignored by %s, which tiles the views itself", self.node, executor.class_obj.node_name)
            return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)
        if noise.ndim != 4:
            raise input_error(
                self.node,
                "model",
                f"latent of shape {tuple(noise.shape)}",
                "the view tiler needs image latents [B,C,H,W]",
                "remove the SyncDiffusion Model Patch for video/audio models",
            )
        conds = comfy_compat.guider_conds(guider)
        check_unsupported(self.node, guider.model_patcher, {f"guider {k}": v for k, v in conds.items()}, False)
        batch, channels, latent_h, latent_w = noise.shape
        memory_guards.require_view_count(self.node, latent_h, latent_w, self.window, self.stride, self.circular)
        window, stride, notes = core_views.fit_window(latent_h, latent_w, self.window, self.stride)
        for note in notes:
            logging.info("%s: %s (latent units)", self.node, note)
        views = core_views.build_view_grid(latent_h, latent_w, window, stride, circular=self.circular)
        model = comfy_compat.guider_inner_model(guider)
        if self.view_batch_size > 0:
            per_call = memory_guards.fit_batch(
                self.node,
                "view_batch_size",
                self.view_batch_size,
                min(self.view_batch_size, len(views)),
                memory_plan.denoise_cost_per_view(model, batch, channels, window[0], window[1]),
                "views",
                noise.device,
            )
        else:
            budget, _auto = memory_plan.device_budget(noise.device, 0.0)
            cost = memory_plan.denoise_cost_per_view(model, batch, channels, window[0], window[1])
            per_call = batching.balanced_batch_size(len(views), batching.views_that_fit(budget, cost, len(views)))
        tiler, extra_args = install_view_tiler(
            extra_args, model, views, (latent_h, latent_w), per_call, self.fusion, (window, stride, self.circular)
        )
        try:
            return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)
        finally:
            tiler.cleanup()


class SyncDiffusionModelPatch(validation.ViewCheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SyncDiffusionModelPatch",
            display_name="SyncDiffusion Model Patch",
            category=CATEGORY_SAMPLING,
            description="Joint diffusion over views as a MODEL patch: put it in front of KSampler, "
            "KSamplerAdvanced, SamplerCustom(Advanced) or any third-party sampler/upscaler node and "
            "the model is evaluated view by view with MultiDiffusion (uniform), Mixture of Diffusers "
            "(gaussian) or SpotDiffusion (spot) fusion, with true 360 wrap and per-view conditioning. "
            "The LPIPS sync step is NOT applied through the patch (it needs a gradient pass between "
            "sampler steps): use the SyncDiffusion KSampler or SyncDiffusion Sampler nodes for sync. "
            "Patches only a clone of the model.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model to patch (the input model is not changed)."),
                *window_inputs(
                    "View width in pixels (and height unless window_height is set); clamped to the image on an "
                    "axis where it is larger (noted in the log).",
                    "Horizontal distance between views in pixels (and vertical unless stride_height is set); "
                    "<= window.",
                ),
                io.Boolean.Input(
                    "circular", default=False, tooltip="360 panorama: views wrap over the right edge back to the left."
                ),
                view_batch_input(
                    "Views per model call; 0 = as many as fit in free memory (ComfyUI's estimate). Area, mask "
                    "and ControlNet conditioning run one view at a time."
                ),
                *view_shape_inputs(),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="A clone of the model that samples over views.")],
        )

    @classmethod
    def execute(
        cls, model, window, stride, circular, view_batch_size, window_height=0, stride_height=0, fusion="uniform"
    ) -> io.NodeOutput:
        node = node_name(cls)
        if not hasattr(model, "clone") or not hasattr(model, "add_wrapper_with_key"):
            raise input_error(node, "model", model, "not a ComfyUI MODEL", "connect a Load Checkpoint MODEL output")
        window_hw, stride_hw = validation.view_geometry(node, window, stride, window_height, stride_height)
        validation.require_view_batch_size(node, view_batch_size)
        patched = model.clone()
        patched.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, WRAPPER_KEY)
        patched.add_wrapper_with_key(
            comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE,
            WRAPPER_KEY,
            ViewTilerWrapper(window_hw, stride_hw, bool(circular), fusion, view_batch_size, node),
        )
        return io.NodeOutput(patched)


PATCH_NODES = [SyncDiffusionModelPatch]
