"""Full-sphere 360 nodes: the sphere sampler and equirect <-> perspective / cubemap / rotation
(geometry in ldm3d_core.projection and sphere_canvas, conventions in docs/sphere360.md)."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ...ldm3d_core import projection, sphere_canvas
from ...sync_core import sync as core_sync
from ..shared import memory_guards, validation
from ..shared.common import CATEGORY_SAMPLING, CATEGORY_STEREO, input_error, node_name, require_equirect, require_image
from ..sync.inputs import check_model_and_vae, load_lpips, lpips_input, sampler_inputs, speed_inputs
from .sphere_sampler import (
    LAYOUTS,
    AnchorSettings,
    SphereSampler,
    SphereSettings,
    SphereSync,
    default_canvas_width,
    sphere_views,
)

MASK_MODES = {"bilinear (depth)": "bilinear", "nearest (mask)": "nearest"}


def _angle_inputs() -> list:
    return [
        io.Float.Input("yaw", default=0.0, min=-360.0, max=360.0, step=1.0, tooltip="Degrees; + looks right."),
        io.Float.Input("pitch", default=0.0, min=-90.0, max=90.0, step=1.0, tooltip="Degrees; + looks up."),
        io.Float.Input(
            "roll", default=0.0, min=-180.0, max=180.0, step=1.0, tooltip="Degrees; + turns the camera clockwise."
        ),
    ]


def _mask_inputs() -> list:
    return [
        io.Mask.Input(
            "mask",
            optional=True,
            tooltip="Optional depth or mask converted with the image (same geometry). White = 1.",
        ),
        io.Combo.Input(
            "mask_interpolation",
            options=list(MASK_MODES),
            default="bilinear (depth)",
            tooltip="bilinear for depth maps, nearest for masks (values stay 0/1).",
        ),
    ]


def _chw(image: torch.Tensor) -> torch.Tensor:
    return image.movedim(-1, 1).float()


def _mask_out(node: str, mask, image: torch.Tensor, convert) -> torch.Tensor:
    """Convert an optional MASK [B, H, W] of the image's size with `convert` (on [B, 1, H, W]); an empty mask
    when absent."""
    if mask is None:
        return torch.zeros(1, 1, 1)
    if mask.dim() == 2:
        mask = mask[None]
    if tuple(mask.shape[-2:]) != tuple(image.shape[1:3]):
        raise input_error(
            node,
            "mask",
            mask,
            f"is {mask.shape[-1]}x{mask.shape[-2]}, the image {image.shape[2]}x{image.shape[1]}",
            "give a mask or depth map of the image's size",
        )
    return convert(mask.float()[:, None])[:, 0]


def _anchor_inputs() -> list:
    """SyncDiffusion's LPIPS step and the memory plan; optional, appended last (saved graphs run unchanged)."""
    return [
        lpips_input(),
        io.Float.Input(
            "anchor_weight",
            default=0.0,
            min=0.0,
            max=100000.0,
            step=0.5,
            optional=True,
            tooltip="SyncDiffusion's w on the sphere: before each of the first 'anchor_steps' steps every view takes "
            "an LPIPS gradient step toward 'anchor_view' (one style across views that share no pixels, e.g. the "
            "poles and the horizon), decaying 0.95 per step as in the paper. 0 = off (the fusion alone); the paper "
            "uses 20. Each anchor step costs about 3-4x a plain step.",
        ),
        io.Int.Input(
            "anchor_steps",
            default=10,
            min=0,
            max=10000,
            optional=True,
            tooltip="The anchor step runs during the first N sampler steps (SyncDiffusion's sync_thres).",
        ),
        io.Int.Input(
            "anchor_view",
            default=0,
            min=0,
            max=1023,
            optional=True,
            tooltip="The view the others are pulled toward, by index: 0 = the horizon view looking forward. rings: "
            "the horizon ring, then the rings above and below, the zenith and nadir last; cube: front, right, "
            "back, left, up, down, then the eight corners.",
        ),
        io.Int.Input(
            "view_batch_size",
            default=0,
            min=0,
            max=256,
            optional=True,
            tooltip="Views per model call, in the denoising and in the anchor step's gradient pass. 0 = auto: "
            "planned from memory_budget_gb (0 = ComfyUI's free memory). The result does not depend on it.",
        ),
        *speed_inputs(),
    ]


def _check_width(node: str, width) -> None:
    """The sphere canvas' width: 0 (automatic) or a multiple of 16 (an even 2:1 canvas of whole latents)."""
    if isinstance(width, int) and width % 16:
        raise input_error(node, "width", width, "is not a multiple of 16", f"use {width + 16 - width % 16} (or 0)")


# what the shared sampler widgets (inputs.sampler_inputs) mean on this node
SAMPLER_TOOLTIPS = {
    "seed": "Noise seed (independent noise per view).",
    "steps": "Sampler steps.",
    "cfg": "CFG scale.",
    "sampler_name": "Any ComfyUI sampler; deterministic ones follow the paper (ancestral samplers "
    "add independent noise per view after each synced step).",
    "scheduler": "Schedule.",
}


class SphereKSampler(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SDL3D_SphereKSampler",
            display_name="SyncDiffusion Sphere KSampler (full 360)",
            category=CATEGORY_SAMPLING,
            description="A full-sphere 360 panorama: perspective views that cover the whole sphere (poles "
            "included) are sampled together, and at every step until 'sync_until' each view's predicted image "
            "is replaced by the consensus of all views on one equirect canvas (decode, fuse, render, encode). "
            "Output: the equirect image, right at the zenith and nadir (and its depth with LDM3D).",
            inputs=[
                io.Model.Input("model", tooltip="SD1.x/SD2.x/SDXL or a flow model (SD3.x, Flux)."),
                io.Conditioning.Input("positive", tooltip="Prompt conditioning, shared by every view."),
                io.Conditioning.Input("negative", tooltip="Negative prompt conditioning."),
                io.Vae.Input("vae", tooltip="The model's VAE: decodes and re-encodes the views at each synced step."),
                *sampler_inputs(steps=30, sampler="ddim", scheduler="normal", tooltips=SAMPLER_TOOLTIPS),
                io.Int.Input(
                    "view_size",
                    default=512,
                    min=64,
                    max=2048,
                    step=8,
                    tooltip="Pixels of each square view: the model's native size (SD1.5 512, SDXL/Flux 1024).",
                ),
                io.Float.Input(
                    "fov",
                    default=72.0,
                    min=30.0,
                    max=120.0,
                    step=1.0,
                    tooltip="Field of view of each view in degrees (72 for 512 px models, 90 for 1024 px).",
                ),
                io.Combo.Input(
                    "layout",
                    options=list(LAYOUTS),
                    default="rings",
                    tooltip="rings: horizon ring, rings above and below, one view per pole (FOV 72, overlap 0.1: "
                    "22 views); cube: 6 cube faces + 8 corner views (14 views, for FOV ~90).",
                ),
                io.Float.Input(
                    "overlap",
                    default=0.1,
                    min=0.0,
                    max=0.6,
                    step=0.05,
                    tooltip="rings: the fraction of each view shared with its neighbours (more views when higher).",
                ),
                io.Int.Input(
                    "width",
                    default=0,
                    min=0,
                    max=16384,
                    step=8,
                    tooltip="Equirect width in pixels (height = width / 2); 0 = keep the views' pixel density.",
                ),
                io.Float.Input(
                    "sync_until",
                    default=0.8,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    tooltip="Fraction of the steps that are synchronised (SyncTweedies: 0.8); 0 = independent views.",
                ),
                *_anchor_inputs(),
            ],
            outputs=[
                io.Image.Output("IMAGE", display_name="equirect", tooltip="The full-sphere 2:1 panorama."),
                io.Latent.Output("LATENT", display_name="views", tooltip="The views' latents (view-major batch)."),
                io.Mask.Output(
                    "MASK",
                    display_name="depth",
                    tooltip="With an LDM3D model and VAE: the fused depth (white = near, along each ray), ready for "
                    "Stereo 360 and the mesh; zeros for other models.",
                ),
            ],
        )

    RULE_INPUTS = ("width",)

    @classmethod
    def input_rules(cls, node, values):
        yield validation.problem_of(_check_width, node, values["width"])

    @classmethod
    def execute(
        cls,
        model,
        positive,
        negative,
        vae,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        view_size,
        fov,
        layout,
        overlap,
        width,
        sync_until,
        lpips=None,
        anchor_weight=0.0,
        anchor_steps=10,
        anchor_view=0,
        view_batch_size=0,
        memory_budget_gb=0.0,
        sync_fast=False,
    ) -> io.NodeOutput:
        node = node_name(cls)
        validation.require_sampler_and_scheduler(node, sampler_name, scheduler)
        check_model_and_vae(node, model, vae)
        _check_width(node, width)
        validation.require_view_batch_size(node, view_batch_size)
        width = width or default_canvas_width(view_size, fov)
        settings = SphereSettings(view_size, fov, overlap, layout, width, sync_until)
        cameras = sphere_views(settings)
        anchor = AnchorSettings(
            core_sync.SyncSchedule(weight=float(anchor_weight), steps=int(anchor_steps)),
            int(anchor_view),
            int(view_batch_size),
            memory_guards.capped_budget_gib(node, "memory_budget_gb", memory_budget_gb) if memory_budget_gb else 0.0,
            bool(sync_fast),
        )
        if anchor.active and not 0 <= anchor.view < len(cameras):
            raise input_error(
                node,
                "anchor_view",
                anchor_view,
                f"this layout has {len(cameras)} views (0 to {len(cameras) - 1})",
                "use 0 (the horizon view looking forward) or a smaller index",
            )
        if anchor.active and lpips is None:
            lpips = load_lpips(node)
        ratio = getattr(vae, "downscale_ratio", 8)
        ratio = ratio if isinstance(ratio, int) else 8
        channels = model.get_model_object("latent_format").latent_channels
        latent = torch.zeros(len(cameras), channels, view_size // ratio, view_size // ratio)
        latent = comfy.sample.fix_empty_latent_channels(model, latent)
        sigmas = comfy.samplers.KSampler(
            model, steps=steps, device=model.load_device, sampler=sampler_name, scheduler=scheduler
        ).sigmas
        sigma_cut = float(sigmas[min(steps, round(sync_until * steps))])
        sync = SphereSync(cameras, width, vae, sigma_cut, views_per_image=1)
        sampler = SphereSampler(
            node, sampler_name, sync, anchor, vae, (lpips.patcher, lpips.resolution) if anchor.active else None
        )
        patched = model.clone()
        patched.set_model_sampler_post_cfg_function(sync)
        samples = comfy.sample.sample_custom(
            patched,
            comfy.sample.prepare_noise(latent, seed),
            cfg,
            sampler,
            sigmas,
            positive,
            negative,
            latent,
            callback=latent_preview.prepare_callback(model, steps),
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=seed,
        )
        equirect, depth = sync.equirect(samples, width)
        if depth is None:
            depth = torch.zeros(equirect.shape[:3])
        device = comfy.model_management.intermediate_device()
        return io.NodeOutput(equirect.to(device), {"samples": samples}, depth.to(device))


def _view_inputs() -> list:
    """yaw, pitch, roll and the horizontal FOV of a perspective view."""
    return [
        *_angle_inputs(),
        io.Float.Input("fov", default=90.0, min=1.0, max=179.0, step=1.0, tooltip="Horizontal FOV, degrees."),
    ]


def _equirect_input():
    return io.Image.Input("image", tooltip="A 2:1 equirect panorama.")


def _equirect_width_input():
    return io.Int.Input(
        "width", default=2048, min=16, max=16384, step=16, tooltip="Equirect width (height = width / 2)."
    )


def _conversion_schema(
    *, node_id: str, display_name: str, description: str, inputs: list, image_out: tuple, mask_out: tuple
) -> io.Schema:
    """The schema of a converter: ``image_out`` / ``mask_out`` are the (display name, tooltip) of its IMAGE and
    MASK outputs. ``node_id`` is given as a literal keyword at each call (ComfyUI-Manager scans for it)."""
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY_STEREO,
        description=description,
        inputs=inputs,
        outputs=[
            io.Image.Output("IMAGE", display_name=image_out[0], tooltip=image_out[1]),
            io.Mask.Output("MASK", display_name=mask_out[0], tooltip=mask_out[1]),
        ],
    )


class _MaskedConversion(validation.CheckedNode):
    """A converter that maps an image and its optional mask/depth alike (``_mask_inputs``): ``conversion`` checks
    the image and returns the map as a function of ([B, C, H, W], interpolation mode)."""

    @classmethod
    def conversion(cls, node: str, image: torch.Tensor, **params):
        raise NotImplementedError

    @classmethod
    def execute(cls, image, mask=None, mask_interpolation="bilinear (depth)", **params) -> io.NodeOutput:
        node = node_name(cls)
        convert = cls.conversion(node, require_image(node, "image", image), **params)
        out = convert(_chw(image), "bilinear").movedim(1, -1)
        return io.NodeOutput(out, _mask_out(node, mask, image, lambda m: convert(m, MASK_MODES[mask_interpolation])))


class EquirectToPerspective(_MaskedConversion):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _conversion_schema(
            node_id="SDL3D_EquirectToPerspective",
            display_name="Equirect to Perspective",
            description="The pinhole view of a 2:1 equirect panorama in a direction (yaw, pitch, roll, FOV); "
            "continuous across the 0/360 seam and the poles.",
            inputs=[
                _equirect_input(),
                *_view_inputs(),
                io.Int.Input("width", default=512, min=8, max=8192, step=8, tooltip="Output width in pixels."),
                io.Int.Input("height", default=512, min=8, max=8192, step=8, tooltip="Output height in pixels."),
                *_mask_inputs(),
            ],
            image_out=("view", "The perspective view."),
            mask_out=("mask", "The mask/depth in the same view (if given)."),
        )

    @classmethod
    def conversion(cls, node, image, yaw, pitch, roll, fov, width, height):
        require_equirect(node, image)
        view = projection.View(yaw, pitch, fov, (height, width), roll)
        return lambda x, mode: projection.equirect_to_perspective(x, view, mode)


class PerspectiveToEquirect(validation.CheckedNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _conversion_schema(
            node_id="SDL3D_PerspectiveToEquirect",
            display_name="Perspective to Equirect",
            description="Places a perspective view (yaw, pitch, roll, FOV) back on a 2:1 equirect panorama: "
            "pasted over 'background' where the view sees, e.g. after editing a view of the poles.",
            inputs=[
                io.Image.Input("image", tooltip="The perspective view."),
                *_view_inputs(),
                _equirect_width_input(),
                io.Image.Input(
                    "background", optional=True, tooltip="Equirect to paste onto (resized to 'width'); else black."
                ),
            ],
            image_out=("equirect", "The panorama with the view placed."),
            mask_out=("coverage", "1 where the view covers the panorama."),
        )

    @classmethod
    def execute(cls, image, yaw, pitch, roll, fov, width, background=None) -> io.NodeOutput:
        node = node_name(cls)
        view_image = _chw(require_image(node, "image", image))
        view = projection.View(yaw, pitch, fov, tuple(view_image.shape[-2:]), roll)
        canvas = sphere_canvas.SphereCanvas([view], width // 2, width)
        if background is not None:
            require_equirect(node, require_image(node, "background", background))
            previous = comfy.utils.common_upscale(_chw(background), width, width // 2, "bilinear", "disabled")
        else:
            previous = torch.zeros(view_image.shape[0], 3, width // 2, width)
        out = canvas.fuse(view_image[None], previous)
        covered = (canvas.total > 0).float().expand(out.shape[0], -1, -1)
        return io.NodeOutput(out.movedim(1, -1), covered)


class EquirectToCubemap(_MaskedConversion):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _conversion_schema(
            node_id="SDL3D_EquirectToCubemap",
            display_name="Equirect to Cubemap",
            description="Six 90-degree cube faces of a 2:1 equirect, as one horizontal strip in the order front, "
            "right, back, left, up, down.",
            inputs=[
                _equirect_input(),
                io.Int.Input("face_size", default=512, min=8, max=8192, step=8, tooltip="Pixels per face side."),
                *_mask_inputs(),
            ],
            image_out=("cubemap", "Strip of 6 faces (6 x face_size wide)."),
            mask_out=("mask", "The mask/depth as the same strip (if given)."),
        )

    @classmethod
    def conversion(cls, node, image, face_size):
        require_equirect(node, image)

        def strip(x, mode):
            faces = sphere_canvas.equirect_to_cubemap(x, face_size, mode)  # [6, B, C, s, s]
            return torch.cat(list(faces), dim=-1)

        return strip


class CubemapToEquirect(_MaskedConversion):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _conversion_schema(
            node_id="SDL3D_CubemapToEquirect",
            display_name="Cubemap to Equirect",
            description="A 2:1 equirect from a strip of six cube faces (front, right, back, left, up, down), as "
            "made by Equirect to Cubemap; every pixel comes from the face it lies on.",
            inputs=[
                io.Image.Input("image", tooltip="Horizontal strip of 6 square faces."),
                _equirect_width_input(),
                *_mask_inputs(),
            ],
            image_out=("equirect", "The 2:1 panorama."),
            mask_out=("mask", "The mask/depth as an equirect (if given)."),
        )

    @classmethod
    def conversion(cls, node, image, width):
        if image.shape[2] != 6 * image.shape[1]:
            raise input_error(
                node,
                "image",
                image,
                f"size {image.shape[2]}x{image.shape[1]} is not a strip of 6 square faces",
                "connect the output of Equirect to Cubemap (width = 6 x height)",
            )
        return lambda x, mode: sphere_canvas.cubemap_to_equirect(
            torch.stack(x.chunk(6, dim=-1)), width // 2, width, mode
        )


class RotateEquirect(_MaskedConversion):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _conversion_schema(
            node_id="SDL3D_RotateEquirect",
            display_name="Rotate Equirect",
            description="Turns a 2:1 equirect panorama: the new centre shows what a camera with this yaw, pitch "
            "and roll saw at its centre (e.g. pitch 90 brings the zenith to the middle for inpainting).",
            inputs=[_equirect_input(), *_angle_inputs(), *_mask_inputs()],
            image_out=("equirect", "The rotated panorama."),
            mask_out=("mask", "The mask/depth rotated alike (if given)."),
        )

    @classmethod
    def conversion(cls, node, image, yaw, pitch, roll):
        require_equirect(node, image)
        return lambda x, mode: projection.rotate_equirect(x, yaw, pitch, roll, mode)


SPHERE_NODES = [
    SphereKSampler,
    EquirectToPerspective,
    PerspectiveToEquirect,
    EquirectToCubemap,
    CubemapToEquirect,
    RotateEquirect,
]
