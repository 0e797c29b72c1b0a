"""The LDM3D UNet in ComfyUI: its config (from a diffusers unet/config.json or a checkpoint's weights), the
sampling settings from the scheduler config, the SD1.x model config and the ldm3d-sr model (low-res latent
concatenated to the input, noise level as class label), and the SD1 CLIP-L text encoder.
"""

from __future__ import annotations

import inspect

import comfy.conds
import comfy.model_base
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths
import torch
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

from .model_files import LDM3DLoadError

BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
PREDICTION_TYPES = {"epsilon": comfy.model_base.ModelType.EPS, "v_prediction": comfy.model_base.ModelType.V_PREDICTION}


class LDM3DSRModel(comfy.model_base.BaseModel):
    """ldm3d-sr UNet: input = [noisy latent, VAE latent of the low-res RGBD], class label = noise level.

    Conditioning keys (set by SDL3D_LDM3DUpscaleConditioning): `concat_latent_image` (unscaled latent,
    scaled here by the latent format like the community pipeline's `* scaling_factor`) and `ldm3d_noise_level`.
    """

    def __init__(self, model_config, model_type=comfy.model_base.ModelType.EPS, device=None):
        super().__init__(model_config, model_type, device=device)
        self.concat_keys = ("concat_image",)

    def extra_conds(self, **kwargs):
        if kwargs.get("concat_latent_image", None) is None:
            raise ValueError(
                "LDM3D-SR model: conditioning lacks the low-res RGBD latent. Fix: pass positive and "
                "negative through 'LDM3D Upscale Conditioning' (SDL3D_LDM3DUpscaleConditioning)"
            )
        out = super().extra_conds(**kwargs)
        level = int(kwargs.get("ldm3d_noise_level", 0))
        classes = self.model_config.unet_config.get("num_classes")
        if isinstance(classes, int) and not 0 <= level < classes:
            raise ValueError(
                f"LDM3D-SR model: noise_level {level} is outside the UNet's {classes} class labels. "
                f"Fix: set noise_level in 'LDM3D Upscale Conditioning' to 0..{classes - 1} (default 20)"
            )
        batch = kwargs["noise"].shape[0]
        out["y"] = comfy.conds.CONDRegular(torch.full((batch,), level, dtype=torch.long))
        return out


class LDM3DModelConfig(comfy.supported_models.SD15):
    """SD1.x model config with the UNet config, sampling settings and prediction type of one LDM3D model."""

    unet_extra_config = {}

    def __init__(self, unet_config: dict, sampling_settings: dict, model_type, scale_factor: float):
        super().__init__(unet_config)
        self.sampling_settings = dict(sampling_settings)
        self._ldm3d_model_type = model_type
        self.latent_format.scale_factor = float(scale_factor)

    def model_type(self, state_dict=None, prefix=""):
        return self._ldm3d_model_type

    def get_model(self, state_dict=None, prefix="", device=None):
        if self.unet_config["in_channels"] > 4:
            return LDM3DSRModel(self, model_type=self._ldm3d_model_type, device=device)
        return comfy.model_base.BaseModel(self, model_type=self._ldm3d_model_type, device=device)


_CROSS_DOWN, _PLAIN_DOWN = "CrossAttnDownBlock2D", "DownBlock2D"
_CROSS_UP, _PLAIN_UP = "CrossAttnUpBlock2D", "UpBlock2D"


def unet_config_from_diffusers(cfg: dict, unet_sd: dict | None = None) -> dict:
    """ComfyUI UNetModel arguments for a diffusers UNet2DConditionModel (SD1.x family only).

    `cfg` is its config.json (always checked: unsupported UNets are refused with a fix), `unet_sd` its
    diffusers-keyed weights. ComfyUI's own detection (comfy.model_detection.unet_config_from_diffusers_unet) gives
    the config wherever it agrees with config.json: full-size ldm3d, ldm3d-4c and ldm3d-pano match its SD15 entry.
    It only matches weight shapes against a table of full-size models, so config.json is read here for the rest:
    ldm3d-sr (8 input channels: no table entry), other sizes (the random-weight test models), and a head count or
    class-label embedding that the shapes it reads do not show (it would answer SD15: 8 heads, no labels).
    """
    config = _unet_config_from_json(cfg)
    try:
        detected = comfy.model_detection.unet_config_from_diffusers_unet(unet_sd) if unet_sd else None
    except (KeyError, IndexError):  # a layout the detection's key walk does not expect: not in its table either
        detected = None
    if detected is None:
        return config
    detected = {k: v for k, v in detected.items() if k != "dtype"}  # set later from the weights (build_model)
    return detected if same_unet_config(detected, config) else config


def same_unet_config(a: dict, b: dict) -> bool:
    """Whether two UNetModel argument dicts build the same network (a missing key means UNetModel's default)."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(UNetModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    return all(a.get(k, defaults.get(k)) == b.get(k, defaults.get(k)) for k in (set(a) | set(b)) - {"dtype"})


def _unet_config_from_json(cfg: dict) -> dict:
    """UNetModel arguments from a diffusers config.json; refuses anything not SD1.x shaped."""

    def refuse(what):
        raise LDM3DLoadError(
            f"unet/config.json: {what} is not an SD1.x-shaped LDM3D UNet",
            "use an Intel LDM3D model folder (ldm3d, ldm3d-4c, ldm3d-pano, ldm3d-sr)",
        )

    down, up = list(cfg.get("down_block_types", [])), list(cfg.get("up_block_types", []))
    blocks = list(cfg.get("block_out_channels", []))
    if not down or len(down) != len(up) or len(down) != len(blocks):
        refuse(f"block types {down} / {up} with block_out_channels {blocks}")
    if any(b not in (_CROSS_DOWN, _PLAIN_DOWN) for b in down) or any(b not in (_CROSS_UP, _PLAIN_UP) for b in up):
        refuse(f"block types {down} / {up}")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        refuse(f"mid_block_type {cfg.get('mid_block_type')!r}")
    for key, ok in (
        ("class_embed_type", None),
        ("addition_embed_type", None),
        ("time_embedding_type", "positional"),
        ("flip_sin_to_cos", True),
        ("freq_shift", 0),
        ("only_cross_attention", False),
        ("dual_cross_attention", False),
        ("encoder_hid_dim", None),
    ):
        if cfg.get(key, ok) != ok:
            refuse(f"{key}={cfg.get(key)!r}")
    context = cfg.get("cross_attention_dim", 1280)
    if context != 768:
        refuse(f"cross_attention_dim {context} (ComfyUI's SD1 CLIP-L gives 768)")
    heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
    if not isinstance(heads, int):
        refuse(f"per-level attention heads {heads}")
    model_channels = blocks[0]
    if any(b % model_channels for b in blocks):
        refuse(f"block_out_channels {blocks}")
    layers = cfg.get("layers_per_block", 2)
    layers = list(layers) if isinstance(layers, (list, tuple)) else [layers] * len(blocks)
    tl = cfg.get("transformer_layers_per_block", 1)
    if not isinstance(tl, int):
        refuse(f"transformer_layers_per_block {tl}")
    depth = []  # per down res block (ComfyUI pops one entry per resnet)
    for level, block in enumerate(down):
        depth += [tl if block == _CROSS_DOWN else 0] * layers[level]
    depth_out = []
    for level in range(len(blocks)):
        up_block = up[len(blocks) - 1 - level]
        depth_out += [tl if up_block == _CROSS_UP else 0] * (layers[level] + 1)
    config = {
        "use_checkpoint": False,
        "image_size": 32,
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": cfg.get("in_channels", 4),
        "out_channels": cfg.get("out_channels", 4),
        "model_channels": model_channels,
        "num_res_blocks": layers,
        "transformer_depth": depth,
        "transformer_depth_output": depth_out,
        "channel_mult": [b // model_channels for b in blocks],
        "transformer_depth_middle": tl,
        "use_linear_in_transformer": bool(cfg.get("use_linear_projection", False)),
        "context_dim": context,
        "num_heads": heads,
        "num_head_channels": -1,
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }
    if cfg.get("num_class_embeds"):
        config["num_classes"] = int(cfg["num_class_embeds"])
    if config["out_channels"] != 4:
        refuse(f"out_channels {config['out_channels']}")
    return config


def unet_config_from_checkpoint(sd: dict, prefix: str = "model.diffusion_model.") -> dict:
    """ComfyUI UNetModel arguments read from LDM checkpoint weights (SD1.x: 8 heads)."""
    config = comfy.model_detection.detect_unet_config(sd, prefix)
    if config is None or config.get("context_dim") != 768 or config.get("adm_in_channels") is not None:
        raise LDM3DLoadError(
            "the checkpoint's UNet is not SD1.x shaped (768-d cross attention, no ADM input)",
            "load an LDM3D checkpoint (model.diffusion_model.*, cond_stage_model.*, first_stage_model.*)",
        )
    config["num_heads"], config["num_head_channels"] = 8, -1
    if f"{prefix}label_emb.weight" in sd:
        config["num_classes"] = sd[f"{prefix}label_emb.weight"].shape[0]
    return config


def sampling_from_scheduler(cfg: dict | None) -> tuple[dict, object, str]:
    """(sampling_settings, ModelType, prediction name) from scheduler_config.json; refuses unknown ones."""
    if cfg is None:
        return {}, comfy.model_base.ModelType.EPS, "epsilon"
    prediction = cfg.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise LDM3DLoadError(
            f"scheduler prediction_type {prediction!r} is not supported (supported: {', '.join(PREDICTION_TYPES)})",
            "use an LDM3D model's own scheduler/",
        )
    schedule = cfg.get("beta_schedule", "scaled_linear")
    if schedule not in BETA_SCHEDULES:
        raise LDM3DLoadError(
            f"scheduler beta_schedule {schedule!r} is not supported (supported: {', '.join(BETA_SCHEDULES)})",
            "use an LDM3D model's own scheduler/",
        )
    if cfg.get("trained_betas") is not None:
        raise LDM3DLoadError("scheduler trained_betas are not supported", "use an LDM3D model's own scheduler/")
    settings = {
        "beta_schedule": BETA_SCHEDULES[schedule],
        "linear_start": float(cfg.get("beta_start", 0.00085)),
        "linear_end": float(cfg.get("beta_end", 0.012)),
        "timesteps": int(cfg.get("num_train_timesteps", 1000)),
        "zsnr": bool(cfg.get("rescale_betas_zero_snr", False)),
    }
    return settings, PREDICTION_TYPES[prediction], prediction


def build_model(unet_sd: dict, unet_config: dict, sampling: dict, model_type, scale_factor: float):
    """ComfyUI ModelPatcher for LDM-keyed UNet weights; every weight must fit (strict)."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model_config = LDM3DModelConfig(unet_config, sampling, model_type, scale_factor)
    unet_dtype = comfy.model_management.unet_dtype(
        model_params=comfy.utils.calculate_parameters(unet_sd),
        supported_dtypes=list(model_config.supported_inference_dtypes),
        weight_dtype=comfy.utils.weight_dtype(unet_sd),
    )
    manual_cast = comfy.model_management.unet_manual_cast(
        unet_dtype, load_device, model_config.supported_inference_dtypes
    )
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model(unet_sd, "")
    model = model.to(offload_device)
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise LDM3DLoadError(
            f"UNet weights do not fit the config: {len(missing)} missing (e.g. "
            f"{missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})",
            "check that unet/config.json belongs to these weights",
        )
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def build_clip(text_sd: dict):
    """ComfyUI SD1 CLIP from HF CLIPTextModel keys (text_model.*, or unprefixed); must be CLIP-L shaped."""
    text_sd = {
        (k if k.startswith("text_model.") or k.startswith("text_projection") else f"text_model.{k}"): v
        for k, v in text_sd.items()
    }
    emb = text_sd.get("text_model.embeddings.token_embedding.weight")
    if emb is None or tuple(emb.shape) != (49408, 768) or "text_model.encoder.layers.11.mlp.fc1.weight" not in text_sd:
        raise LDM3DLoadError(
            "the text encoder is not CLIP ViT-L/14 (49408 x 768 tokens, 12 layers)",
            "use the text_encoder/ folder of an Intel LDM3D model",
        )
    embeddings = (
        folder_paths.get_folder_paths("embeddings") if "embeddings" in folder_paths.folder_names_and_paths else None
    )
    return comfy.sd.load_text_encoder_state_dicts(
        [text_sd], embedding_directory=embeddings, clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION
    )
