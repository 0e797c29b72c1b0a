"""Load an LDM3D model by its combo name: MODEL, CLIP and VAE through ComfyUI's classes.

Where models are found and how they are named: model_files. Architecture is read from config.json / weights,
never from a file name: the UNet config from unet/config.json (diffusers) or the weights (single file), keys mapped
with comfy.utils.unet_to_diffusers (ldm3d_unet); the VAE channel count (4 or 6) from decoder.conv_out.weight
(ldm3d_vae). MODEL is a ComfyUI ModelPatcher around a BaseModel (SD1.x shaped, EPS or V prediction from the
scheduler config); CLIP is ComfyUI's SD1 CLIP-L (ComfyUI's bundled tokenizer, the same CLIP BPE vocabulary Intel
ships); VAE is an LDM3DVAE (a comfy.sd.VAE subclass, fp32).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import comfy.utils

from .ldm3d_vae import DEFAULT_SCALING, LDM3DVAE
from .model_files import LDM3DLoadError, resolve_model
from .unet import (
    build_clip,
    build_model,
    sampling_from_scheduler,
    unet_config_from_checkpoint,
    unet_config_from_diffusers,
)

log = logging.getLogger(__name__)

WEIGHT_NAMES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
    "model.fp16.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.bin",
    "pytorch_model.bin",
    "pytorch_model.fp16.bin",
)
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")


@dataclass
class LoadedLDM3D:
    model: object
    clip: object
    vae: LDM3DVAE
    info: dict = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.info.items())


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise LDM3DLoadError(f"cannot read {path}: {e}", "re-download the model folder") from e


def _weights_in(folder: str, component: str) -> dict:
    sub = os.path.join(folder, component)
    for name in WEIGHT_NAMES:
        path = os.path.join(sub, name)
        if os.path.isfile(path):
            return comfy.utils.load_torch_file(path, safe_load=True)
    raise LDM3DLoadError(
        f"{component}/ in {folder} has no weights ({' or '.join(WEIGHT_NAMES[:2])})",
        f"download the model's {component}/ folder completely",
    )


def load_diffusers_folder(folder: str) -> LoadedLDM3D:
    """Load a diffusers-layout LDM3D folder (Intel/ldm3d, ldm3d-4c, ldm3d-pano, ldm3d-sr)."""
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise LDM3DLoadError(f"{folder} has no model_index.json", "point at the model's top folder")
    index = _read_json(os.path.join(folder, "model_index.json"))
    for component in REQUIRED_COMPONENTS:
        if not os.path.isdir(os.path.join(folder, component)):
            raise LDM3DLoadError(
                f"model folder {folder} lacks the '{component}/' component",
                f"download the complete model including {component}/ (Intel LDM3D layout: "
                "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
            )
    sched_path = os.path.join(folder, "scheduler", "scheduler_config.json")
    sched = _read_json(sched_path) if os.path.isfile(sched_path) else None
    if sched is None:
        raise LDM3DLoadError(f"{folder}/scheduler has no scheduler_config.json", "re-download scheduler/")
    sampling, model_type, prediction = sampling_from_scheduler(sched)
    vae_cfg_path = os.path.join(folder, "vae", "config.json")
    vae_cfg = _read_json(vae_cfg_path) if os.path.isfile(vae_cfg_path) else {}
    scale = float(vae_cfg.get("scaling_factor", DEFAULT_SCALING))
    if vae_cfg.get("shift_factor") not in (None, 0, 0.0):
        raise LDM3DLoadError(
            f"vae shift_factor {vae_cfg.get('shift_factor')} is not supported", "use an LDM3D VAE (shift 0)"
        )
    unet_cfg = _read_json(os.path.join(folder, "unet", "config.json"))
    unet_raw = _weights_in(folder, "unet")
    unet_config = unet_config_from_diffusers(unet_cfg, unet_raw)
    mapping = comfy.utils.unet_to_diffusers(unet_config)
    mapping["class_embedding.weight"] = "label_emb.weight"
    unknown = [k for k in unet_raw if k not in mapping]
    if unknown:
        raise LDM3DLoadError(
            f"unet weights hold {len(unknown)} keys the config does not explain, e.g. {unknown[0]!r}",
            "check that unet/config.json belongs to these weights",
        )
    unet_sd = {mapping[k]: v for k, v in unet_raw.items()}
    model = build_model(unet_sd, unet_config, sampling, model_type, scale)
    clip = build_clip(_weights_in(folder, "text_encoder"))
    vae = LDM3DVAE(_weights_in(folder, "vae"), scale, source=folder)
    if not os.path.isdir(os.path.join(folder, "tokenizer")):
        log.warning("LDM3D: %s has no tokenizer/; using ComfyUI's bundled CLIP tokenizer (same vocabulary)", folder)
    info = {
        "source": os.path.basename(folder.rstrip("/\\")),
        "pipeline": index.get("_class_name", "?"),
        "vae_channels": vae.ldm3d_channels,
        "scaling_factor": scale,
        "prediction_type": prediction,
        "scheduler": sched.get("_class_name", "?"),
        "unet_in_channels": unet_config["in_channels"],
        "native_size": int(unet_cfg.get("sample_size", 64)) * vae.upscale_ratio,
    }
    if "max_noise_level" in index:
        info["max_noise_level"] = int(index["max_noise_level"])
        vae.max_noise_level = info["max_noise_level"]  # LDM3D Upscale Conditioning checks noise_level against it
    return LoadedLDM3D(model, clip, vae, info)


def load_single_file(path: str) -> LoadedLDM3D:
    """Load an LDM-format single-file LDM3D checkpoint.

    Keys: model.diffusion_model.* (UNet), cond_stage_model.* (CLIP), first_stage_model.* (VAE).
    """
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    prefixes = {"model.diffusion_model.": "UNet", "first_stage_model.": "VAE", "cond_stage_model.": "text encoder"}
    for prefix, what in prefixes.items():
        if not any(k.startswith(prefix) for k in sd):
            raise LDM3DLoadError(
                f"{os.path.basename(path)} has no {what} weights ({prefix}*)",
                "use a full LDM3D checkpoint, or the diffusers folder",
            )
    unet_config = unet_config_from_checkpoint(sd)
    unet_sd = comfy.utils.state_dict_prefix_replace(sd, {"model.diffusion_model.": ""}, filter_keys=True)
    vae_sd = comfy.utils.state_dict_prefix_replace(sd, {"first_stage_model.": ""}, filter_keys=True)
    clip_sd = comfy.utils.state_dict_prefix_replace(sd, {"cond_stage_model.transformer.": ""}, filter_keys=True)
    clip_sd = {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in clip_sd.items()}
    sampling, model_type, prediction = sampling_from_scheduler(None)
    vae = LDM3DVAE(vae_sd, DEFAULT_SCALING, source=path)
    model = build_model(unet_sd, unet_config, sampling, model_type, DEFAULT_SCALING)
    clip = build_clip(clip_sd)
    info = {
        "source": os.path.basename(path),
        "pipeline": "single-file checkpoint",
        "vae_channels": vae.ldm3d_channels,
        "scaling_factor": DEFAULT_SCALING,
        "prediction_type": prediction + " (assumed: no scheduler config)",
        "unet_in_channels": unet_config["in_channels"],
    }
    return LoadedLDM3D(model, clip, vae, info)


def load_ldm3d(name: str) -> LoadedLDM3D:
    """Load a model by its combo name (see module docstring)."""
    path = resolve_model(name)
    if os.path.isdir(path):
        return load_diffusers_folder(path)
    return load_single_file(path)
