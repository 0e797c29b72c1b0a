"""LDM3D nodes: load an Intel LDM3D model, and the LDM3D-SR conditioning (decode/encode, and the layouts both
modules use: codec_nodes)."""

from __future__ import annotations

import comfy.utils
import torch
from comfy_api.latest import io

from ..shared import validation
from ..shared.common import (
    CATEGORY_LDM3D,
    CATEGORY_LOADERS,
    input_error,
    node_name,
    require_image,
    require_mask,
    require_same_size,
)
from . import loading, model_files
from .codec_nodes import require_encodable, require_ldm3d_vae


class LDM3DLoader(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LDM3DLoader",
            display_name="LDM3D Loader",
            category=CATEGORY_LOADERS,
            description="Load an Intel LDM3D model (ldm3d, ldm3d-4c, ldm3d-pano, ldm3d-sr) from a diffusers folder in "
            "models/ldm3d or models/diffusers, or a single-file checkpoint. The VAE channel count (4 or "
            "6) is read from the weights; prediction type and noise schedule from scheduler/.",
            inputs=[
                io.Combo.Input(
                    "model_name",
                    options=model_files.list_models(),
                    tooltip="LDM3D model: a diffusers folder (model_index.json, unet/, vae/, text_encoder/, "
                    "scheduler/) or a .safetensors checkpoint; folders under models/diffusers are "
                    "listed as diffusers/<name>, checkpoints as checkpoints/<name>.",
                ),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="SD1.x-shaped UNet; works with stock KSampler."),
                io.Clip.Output(
                    display_name="CLIP", tooltip="CLIP ViT-L text encoder; works with stock CLIP Text Encode."
                ),
                io.Vae.Output(
                    display_name="VAE",
                    tooltip="LDM3D VAE (4 or 6 channels, fp32). Use LDM3D Decode for RGB + "
                    "depth; stock VAE Decode gives the RGB part only.",
                ),
                io.String.Output(
                    display_name="info",
                    tooltip="What was read from the model: VAE channels, scaling "
                    "factor, prediction type, scheduler, native size.",
                ),
            ],
        )

    @classmethod
    def execute(cls, model_name: str) -> io.NodeOutput:
        node = node_name(cls)
        try:
            loaded = loading.load_ldm3d(model_name)
        except model_files.LDM3DLoadError as e:
            raise input_error(node, "model_name", model_name, e.problem, e.fix) from e
        return io.NodeOutput(loaded.model, loaded.clip, loaded.vae, loaded.summary())


class LDM3DUpscaleConditioning(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_LDM3DUpscaleConditioning",
            display_name="LDM3D Upscale Conditioning (ldm3d-sr)",
            category=CATEGORY_LDM3D,
            description="For Intel/ldm3d-sr: resize the low-res RGB + depth to the target size, encode them with the "
            "LDM3D VAE and attach that latent (concatenated to the UNet input) and the noise level "
            "(UNet class label) to both conditionings. Sample an empty latent of the returned size with "
            "a stock KSampler, then LDM3D Decode.",
            inputs=[
                io.Conditioning.Input("positive", tooltip="Prompt conditioning (CLIP Text Encode)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Vae.Input("vae", tooltip="The ldm3d-sr VAE (LDM3D Loader)."),
                io.Image.Input("image", tooltip="Low-resolution RGB IMAGE [B,H,W,3]."),
                io.Mask.Input(
                    "depth",
                    tooltip="Low-resolution depth [B,H,W] in [0,1] (float or 16-bit; never an "
                    "8-bit 'L' conversion, which clips 16-bit codes).",
                ),
                io.Int.Input("width", default=1024, min=64, max=8192, step=8, tooltip="Output width in pixels."),
                io.Int.Input("height", default=1024, min=64, max=8192, step=8, tooltip="Output height in pixels."),
                io.Int.Input(
                    "noise_level",
                    default=20,
                    min=0,
                    max=999,
                    tooltip="UNet class label (the pipeline's noise_level; default 20, max_noise_level 350).",
                ),
            ],
            outputs=[
                io.Conditioning.Output(display_name="positive", tooltip="Positive with the low-res latent attached."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative with the low-res latent attached."),
                io.Latent.Output(display_name="latent", tooltip="Empty latent of the target size to sample."),
            ],
        )

    RULE_INPUTS = ("width", "height")

    @classmethod
    def input_rules(cls, node, values):
        for name in cls.RULE_INPUTS:
            value = values[name]
            if value is not None and value % 8:
                yield str(input_error(node, name, value, "must be a multiple of 8", f"use {value - value % 8}"))

    @classmethod
    def execute(cls, positive, negative, vae, image, depth, width=1024, height=1024, noise_level=20) -> io.NodeOutput:
        node = node_name(cls)
        vae = require_ldm3d_vae(node, vae)
        max_level = getattr(vae, "max_noise_level", None)
        if max_level is not None and noise_level > max_level:
            raise input_error(
                node,
                "noise_level",
                noise_level,
                f"is above this model's max_noise_level {max_level} (model_index.json)",
                f"use 0..{max_level} (the pipeline default is 20)",
            )
        if vae.ldm3d_channels != 4:
            raise input_error(
                node,
                "vae",
                vae,
                f"ldm3d-sr uses a 4-channel VAE, this one has {vae.ldm3d_channels}",
                "connect the VAE of the ldm3d-sr model",
            )
        image = require_image(node, "image", image)
        depth = require_mask(node, "depth", depth)
        require_same_size(node, "image", image, "depth", depth, image.shape[1:3], depth.shape[1:3])
        for name, value in (("width", width), ("height", height)):
            if value % 8:
                raise input_error(node, name, value, "must be a multiple of 8", f"use {value - value % 8}")
        require_encodable(node, "width", width, vae, width, height, image.shape[0])
        rgb = comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bicubic", "disabled")
        d = comfy.utils.common_upscale(depth.unsqueeze(1), width, height, "bilinear", "disabled")[:, 0]
        latent = vae.encode_rgbd(rgb.movedim(1, -1).clamp(0, 1), d.clamp(0, 1))
        extra = {"concat_latent_image": latent, "ldm3d_noise_level": int(noise_level)}
        out = []
        for conditioning in (positive, negative):
            out.append([[c[0], {**c[1], **extra}] for c in conditioning])
        empty = torch.zeros_like(latent)
        return io.NodeOutput(out[0], out[1], {"samples": empty})


LDM3D_NODES = [LDM3DLoader, LDM3DUpscaleConditioning]
