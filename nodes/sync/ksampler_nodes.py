"""SyncDiffusion nodes: a KSampler, a SAMPLER for SamplerCustom(Advanced), and an LPIPS loader.

The nodes validate inputs, convert pixel sizes to latent units and hand everything to nodes/sync/sampler.py; the
inputs and checks they share are in nodes/sync/inputs.py.
"""

from __future__ import annotations

import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..shared import comfy_compat, memory_guards, validation
from ..shared.common import CATEGORY_LOADERS, CATEGORY_SAMPLING, input_error, node_name
from .guards import base_sampler_input, check_base_sampler, check_unsupported
from .inputs import (
    LPIPS_NETS,
    LPIPS_TYPE,
    SAMPLER_NAME_TOOLTIP,
    build_sampler,
    check_geometry,
    check_model_and_vae,
    load_lpips,
    lpips_input,
    sampler_inputs,
    sampler_name_input,
    speed_inputs,
    sync_inputs,
    sync_settings,
    view_shape_inputs,
)
from .sampler import SyncDiffusionSampler

# what the shared sampler widgets (inputs.sampler_inputs) mean on this node
KSAMPLER_TOOLTIPS = {
    "seed": "Noise seed (same noise as the stock KSampler for the same seed).",
    "steps": "Sampler steps (paper: 50 DDIM).",
    "cfg": "Classifier-free guidance scale (paper: 7.5).",
    "sampler_name": SAMPLER_NAME_TOOLTIP,
    "scheduler": "Noise schedule; ddim_uniform gives the paper's DDIM timesteps.",
}


class SyncDiffusionKSampler(validation.ViewCheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SyncDiffusionKSampler",
            display_name="SyncDiffusion KSampler",
            category=CATEGORY_SAMPLING,
            description="Coherent panoramas (SyncDiffusion, NeurIPS 2023): joint diffusion over overlapping views "
            "(MultiDiffusion) plus, during the first sync_steps steps, one LPIPS gradient step per view "
            "pulling its predicted image toward the anchor view. Works with any sampler/scheduler, "
            "ControlNet, area conditioning and img2img (denoise < 1).",
            inputs=[
                io.Model.Input(
                    "model",
                    tooltip="The diffusion model: SD1.x/SD2.x/SDXL (eps or v-prediction) or a "
                    "flow-matching model (SD3.x, Flux and its fine-tunes).",
                ),
                io.Conditioning.Input(
                    "positive",
                    tooltip="Prompt conditioning; area conditioning and ControlNet "
                    "hints are cropped to each view; SDXL size conditioning "
                    "is set to the view size unless the prompt sets one; "
                    "Flux guidance and pooled outputs reach every view.",
                ),
                io.Conditioning.Input("negative", tooltip="Negative prompt conditioning."),
                io.Latent.Input("latent_image", tooltip="The panorama latent (e.g. Empty Latent Image 2048x512)."),
                io.Vae.Input(
                    "vae",
                    tooltip="Decoder for the LPIPS loss (differentiated). The checkpoint's VAE is "
                    "the paper; a TAESD VAE is ~18x cheaper. Its latent channels must "
                    "match the model's (4 for SD1.x/SDXL, 16 for SD3.x/Flux).",
                ),
                *sampler_inputs(steps=50, sampler="euler", scheduler="ddim_uniform", tooltips=KSAMPLER_TOOLTIPS),
                io.Float.Input(
                    "denoise",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Below 1: img2img panorama from latent_image (sync counts from the first executed step).",
                ),
                *sync_inputs(),
                lpips_input(),
                *speed_inputs(),
                *view_shape_inputs(),
            ],
            outputs=[io.Latent.Output("LATENT", display_name="latent", tooltip="The sampled panorama latent.")],
        )

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        latent_image,
        vae,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise,
        lpips=None,
        **sync_widgets,
    ) -> io.NodeOutput:
        node = node_name(cls)
        validation.require_sampler_and_scheduler(node, sampler_name, scheduler)
        check_model_and_vae(node, model, vae)
        check_unsupported(node, model, {"positive": positive, "negative": negative})
        settings = sync_settings(node, **sync_widgets)
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        settings = check_geometry(node, latent, settings, model, vae)
        sampler = build_sampler(node, SyncDiffusionSampler, sampler_name, settings, vae, lpips)
        sigmas = comfy.samplers.KSampler(
            model,
            steps=steps,
            device=model.load_device,
            sampler=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
            model_options=model.model_options,
        ).sigmas
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        callback = latent_preview.prepare_callback(model, steps)
        samples = comfy.sample.sample_custom(
            model,
            noise,
            cfg,
            sampler,
            sigmas,
            positive,
            negative,
            latent,
            noise_mask=latent_image.get("noise_mask"),
            callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=seed,
        )
        out = latent_image.copy()
        out["samples"] = samples
        return io.NodeOutput(out)


class SyncDiffusionSamplerNode(validation.ViewCheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SyncDiffusionSampler",
            display_name="SyncDiffusion Sampler",
            category=CATEGORY_SAMPLING,
            description="SyncDiffusion as a SAMPLER for SamplerCustom / SamplerCustomAdvanced: any guider, any "
            "sigmas (scheduler), any noise. Wraps the chosen base sampler (sampler_name, or a configured "
            "SAMPLER connected to 'sampler') with joint diffusion over views and the LPIPS synchronisation step.",
            inputs=[
                io.Vae.Input("vae", tooltip="Decoder for the LPIPS loss (the model's VAE, or TAESD for speed)."),
                *sync_inputs(),
                sampler_name_input("euler"),
                lpips_input(),
                *speed_inputs(),
                *view_shape_inputs(),
                base_sampler_input(),
            ],
            outputs=[
                io.Sampler.Output(
                    "SAMPLER", display_name="sampler", tooltip="Connect to SamplerCustom / SamplerCustomAdvanced."
                )
            ],
        )

    @classmethod
    def execute(cls, vae, sampler_name, lpips=None, sampler=None, **sync_widgets) -> io.NodeOutput:
        node = node_name(cls)
        check_base_sampler(node, sampler)
        if sampler is None:
            validation.require_sampler_and_scheduler(node, sampler_name)
        if vae is None or not hasattr(vae, "first_stage_model"):
            raise input_error(node, "vae", vae, "not a ComfyUI VAE", "connect the checkpoint's VAE or a TAESD VAE")
        settings = sync_settings(node, **sync_widgets)
        return io.NodeOutput(
            build_sampler(node, CheckedSyncDiffusionSampler, sampler_name, settings, vae, lpips, base=sampler)
        )


class CheckedSyncDiffusionSampler(SyncDiffusionSampler):
    """The SAMPLER node's sampler: checks model, VAE and geometry when the guider hands them over."""

    def sample(
        self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None, disable_pbar=False
    ):
        node = self.node_name
        check_model_and_vae(node, model_wrap.model_patcher, self.vae)
        conds = comfy_compat.guider_conds(model_wrap)
        check_unsupported(node, model_wrap.model_patcher, {f"guider {k}": v for k, v in conds.items()})
        self.settings = check_geometry(node, noise, self.settings, model_wrap.model_patcher, self.vae)
        return super().sample(model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask, disable_pbar)


class SyncDiffusionLPIPSLoader(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LPIPSLoader",
            display_name="SyncDiffusion LPIPS Loader",
            category=CATEGORY_LOADERS,
            description="Loads LPIPS (v0.1 learned heads from the lpips package) with its ImageNet backbone from "
            "models/lpips (vgg16-397923af.pth or alexnet-owt-7be5be79.pth; the torch hub cache is "
            "searched too). Nothing is downloaded.",
            inputs=[
                io.Combo.Input(
                    "net",
                    options=LPIPS_NETS,
                    default="vgg",
                    tooltip="vgg = the paper's LPIPS-VGG; alex = LPIPS-AlexNet, ~20x cheaper, a "
                    "different metric (retune sync_weight).",
                ),
                io.Int.Input(
                    "resolution",
                    default=0,
                    min=0,
                    max=4096,
                    step=8,
                    tooltip="Resize decoded views so the shorter side is this many pixels before LPIPS "
                    "(0 = native, as in the paper; 256 is ~4x cheaper).",
                ),
            ],
            outputs=[
                LPIPS_TYPE.Output(
                    "SDL3D_LPIPS", display_name="lpips", tooltip="Connect to a SyncDiffusion KSampler or Sampler."
                )
            ],
        )

    RULE_INPUTS = ("resolution",)

    @classmethod
    def input_rules(cls, node, values):
        resolution = values["resolution"]
        if resolution is not None and 0 < resolution < memory_guards.MIN_LPIPS_RESOLUTION:
            yield validation.problem_of(memory_guards.require_lpips_resolution, node, values["net"], resolution)

    @classmethod
    def execute(cls, net, resolution) -> io.NodeOutput:
        node = node_name(cls)
        if net not in LPIPS_NETS:
            raise input_error(node, "net", net, "unknown network", f"use one of {LPIPS_NETS}")
        memory_guards.require_lpips_resolution(node, net, resolution)
        return io.NodeOutput(load_lpips(node, net, resolution, input_name="net"))


SYNC_NODES = [SyncDiffusionKSampler, SyncDiffusionSamplerNode, SyncDiffusionLPIPSLoader]
