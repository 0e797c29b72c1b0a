"""ComfyUI glue for LDM3D models: find them, load UNet / CLIP / 4- or 6-channel VAE through ComfyUI's classes.

Sources (names as the loader's combo shows them):
- `<name>`                  a diffusers folder (model_index.json, unet/, vae/, text_encoder/, scheduler/,
                            tokenizer/) or a single-file checkpoint under models/ldm3d/
- `diffusers/<name>`        a diffusers folder under models/diffusers/
- `checkpoints/<name>`      a single-file checkpoint under models/checkpoints/
Architecture is read from config.json / weights, never from a file name: the UNet config from unet/config.json
(diffusers) or the weights (single file), keys mapped with comfy.utils.unet_to_diffusers; the VAE channel count
(4 or 6) from decoder.conv_out.weight. MODEL is a ComfyUI ModelPatcher around a BaseModel (SD1.x shaped,
EPS or V prediction from the scheduler config); CLIP is ComfyUI's SD1 CLIP-L (ComfyUI's bundled tokenizer,
the same CLIP BPE vocabulary Intel ships); VAE is an LDM3DVAE (a comfy.sd.VAE subclass, fp32).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch

import comfy.conds
import comfy.diffusers_convert
import comfy.model_base
import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import comfy.utils
import folder_paths

from ..ldm3d_core import rgbd, tiling
from . import model_folders

log = logging.getLogger(__name__)

WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                "model.safetensors", "model.fp16.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.fp16.bin", "pytorch_model.bin", "pytorch_model.fp16.bin")
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "scheduler")
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
BETA_SCHEDULES = {"scaled_linear": "linear", "linear": "sqrt_linear", "squaredcos_cap_v2": "squaredcos_cap_v2"}
PREDICTION_TYPES = {"epsilon": comfy.model_base.ModelType.EPS, "v_prediction": comfy.model_base.ModelType.V_PREDICTION}
DEFAULT_SCALING = 0.18215


class LDM3DLoadError(ValueError):
    """A model that cannot be loaded: `problem` and `fix` are turned into the node's input error."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}. Fix: {fix}")
        self.problem, self.fix = problem, fix


# ---------------------------------------------------------------- finding models


def _ensure_folders() -> None:
    model_folders.register()


def _folder_models(base: str, max_depth: int = 3) -> list[tuple[str, str]]:
    """(relative name, absolute path) of diffusers folders (model_index.json) and checkpoint files under base."""
    found = []
    if not os.path.isdir(base):
        return found
    for root, dirs, files in os.walk(base, followlinks=True):
        rel = os.path.relpath(root, base)
        depth = 0 if rel == "." else rel.count(os.sep) + 1
        if "model_index.json" in files and rel != ".":
            found.append((rel.replace(os.sep, "/"), root))
            dirs[:] = []
            continue
        for f in files:
            if f.lower().endswith(CHECKPOINT_EXTENSIONS) and not f.endswith(".tmp"):
                name = f if rel == "." else f"{rel}/{f}".replace(os.sep, "/")
                found.append((name, os.path.join(root, f)))
        if depth >= max_depth:
            dirs[:] = []
        dirs.sort()
    return found


def list_models() -> list[str]:
    """Names for the loader combo: models/ldm3d entries, then diffusers/ and checkpoints/ prefixed ones."""
    _ensure_folders()
    return sorted(_index().keys(), key=lambda n: (n.startswith(("diffusers/", "checkpoints/")), n))


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for base in folder_paths.get_folder_paths(model_folders.LDM3D_FOLDER):
        for name, path in _folder_models(base):
            index.setdefault(name, path)
    if "diffusers" in folder_paths.folder_names_and_paths:
        for base in folder_paths.get_folder_paths("diffusers"):
            for name, path in _folder_models(base):
                if os.path.isdir(path) and _is_ldm3d_folder(path):
                    index.setdefault(f"diffusers/{name}", path)
    if "checkpoints" in folder_paths.folder_names_and_paths:
        for name in folder_paths.get_filename_list("checkpoints"):
            path = folder_paths.get_full_path("checkpoints", name)
            if path and _is_ldm3d_checkpoint(path):
                index.setdefault(f"checkpoints/{name.replace(os.sep, '/')}", path)
    return index


LDM3D_VAE_CHANNELS = (4, 6)  # RGB + depth (ldm3d-4c, -pano, -sr) or RGB + RGB-like depth (ldm3d); plain SD: 3


def _is_ldm3d_folder(path: str) -> bool:
    """A diffusers folder under models/diffusers is listed only if its vae/config.json says 4 or 6 channels."""
    try:
        with open(os.path.join(path, "vae", "config.json"), encoding="utf-8") as f:
            return json.load(f).get("out_channels") in LDM3D_VAE_CHANNELS
    except (OSError, ValueError, AttributeError):
        return False


def _is_ldm3d_checkpoint(path: str) -> bool:
    """A file under models/checkpoints is listed only if it is a .safetensors whose VAE decodes 4 or 6 channels.

    Reads the safetensors header only (a few KB), not the weights; other formats cannot be checked cheaply.
    """
    if not path.lower().endswith(".safetensors"):
        return False
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100_000_000:
                return False
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return False
    entry = header.get("first_stage_model.decoder.conv_out.weight") if isinstance(header, dict) else None
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return bool(shape) and shape[0] in LDM3D_VAE_CHANNELS


def resolve_model(name: str) -> str:
    """Absolute path of a combo name; raises LDM3DLoadError when it is not there."""
    _ensure_folders()
    path = _index().get(name)
    if path is None:
        raise LDM3DLoadError(f"no LDM3D model named {name!r} in models/ldm3d, models/diffusers or models/checkpoints",
                             _missing_model_fix(name))
    return path


def _missing_model_fix(name: str) -> str:
    """Where to put the model the workflow asks for, named after that model (not a fixed example)."""
    prefix, _, rest = name.partition("/")
    if prefix == "checkpoints" and rest:
        return (f"put the LDM3D single-file checkpoint '{rest}' in ComfyUI/models/checkpoints/ (or pick another "
                f"model in the list) and refresh the node list")
    folder = rest if prefix == "diffusers" and rest else name
    where = "models/diffusers" if prefix == "diffusers" and rest else "models/ldm3d"
    if folder.lower().endswith(CHECKPOINT_EXTENSIONS):
        return f"put the LDM3D checkpoint file '{folder}' in ComfyUI/{where}/ and refresh the node list"
    base = os.path.basename(folder.rstrip("/"))
    source = f"the Intel/{base} diffusers folder" if base.startswith("ldm3d") else "the LDM3D diffusers folder"
    return (f"put {source} (model_index.json, unet/, vae/, text_encoder/, scheduler/) at ComfyUI/{where}/{folder} "
            f"(or a .safetensors checkpoint there), then refresh the node list")


# ---------------------------------------------------------------- the VAE


@dataclass
class VAEArch:
    ddconfig: dict
    embed_dim: int
    channels: int
    scale: int


def vae_arch_from_weights(sd: dict) -> VAEArch:
    """Read an LDM-format KL VAE architecture from its weights; channels = decoder.conv_out out channels."""
    needed = ("encoder.conv_in.weight", "decoder.conv_in.weight", "decoder.conv_out.weight", "encoder.conv_out.weight")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise LDM3DLoadError(f"the VAE weights lack {missing[0]!r} (not a KL autoencoder)",
                             "use the vae/ folder of an Intel LDM3D model")
    ch, in_ch = sd["encoder.conv_in.weight"].shape[:2]
    out_ch = sd["decoder.conv_out.weight"].shape[0]
    z_channels = sd["decoder.conv_in.weight"].shape[1]
    levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
    res_blocks = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
    ch_mult = []
    for i in range(levels):
        width = sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]
        if width % ch:
            raise LDM3DLoadError(f"VAE level {i} width {width} is not a multiple of {ch}", "use an LDM3D VAE")
        ch_mult.append(width // ch)
    if any(".attn." in k for k in sd if k.startswith(("encoder.down.", "decoder.up."))):
        raise LDM3DLoadError("the VAE has attention inside its resolution levels (not an SD/LDM3D VAE)",
                             "use the vae/ folder of an Intel LDM3D model")
    if ch % 32 or any((ch * m) % 32 for m in ch_mult):
        raise LDM3DLoadError(f"VAE channel widths {[ch * m for m in ch_mult]} are not multiples of 32 "
                             "(ComfyUI's VAE uses 32 group-norm groups)", "use an LDM3D VAE")
    if out_ch not in rgbd.LDM3D_CHANNELS or in_ch != out_ch:
        raise LDM3DLoadError(f"the VAE maps {in_ch} -> {out_ch} channels; an LDM3D VAE has 4 (RGB + depth) or 6 "
                             "(RGB + RGB-like depth)", "load an Intel LDM3D model (ldm3d, ldm3d-4c, ldm3d-pano, "
                             "ldm3d-sr); for a plain SD VAE use the stock VAE Decode")
    ddconfig = {"double_z": sd["encoder.conv_out.weight"].shape[0] == 2 * z_channels, "z_channels": z_channels,
                "resolution": 256, "in_channels": in_ch, "out_ch": out_ch, "ch": ch, "ch_mult": ch_mult,
                "num_res_blocks": res_blocks, "attn_resolutions": [], "dropout": 0.0}
    embed_dim = sd["post_quant_conv.weight"].shape[1] if "post_quant_conv.weight" in sd else z_channels
    return VAEArch(ddconfig, embed_dim, out_ch, 2 ** (levels - 1))


class LDM3DVAE(comfy.sd.VAE):
    """A comfy.sd.VAE for 4- or 6-channel LDM3D autoencoders, always fp32.

    Stock `VAE Decode` / `VAE Decode (Tiled)` get the RGB part ([B,H,W,3]); `decode_rgbd` returns all channels
    [B,H,W,C] in [0,1]. `encode` takes C-channel pixels (use `encode_rgbd(rgb, depth)`); a 3-channel image
    raises (stock `VAE Encode` cannot supply depth: use LDM3D Encode).
    """

    def __init__(self, sd: dict, scaling_factor: float = DEFAULT_SCALING, source: str = ""):
        if "decoder.up_blocks.0.resnets.0.norm1.weight" in sd:
            sd = comfy.diffusers_convert.convert_vae_state_dict(sd)
            if any(k.startswith(("encoder.down_blocks", "decoder.up_blocks")) for k in sd):
                raise LDM3DLoadError("the diffusers VAE layout is not the 4-level, 2-resblock SD layout",
                                     "use the vae/ folder of an Intel LDM3D model")
        if "decoder.post_quant_conv.weight" in sd:
            sd = comfy.utils.state_dict_prefix_replace(sd, {"decoder.post_quant_conv.": "post_quant_conv.",
                                                            "encoder.quant_conv.": "quant_conv."})
        arch = vae_arch_from_weights(sd)
        super().__init__(sd=sd, config={"params": {"ddconfig": arch.ddconfig, "embed_dim": arch.embed_dim}},
                         dtype=torch.float32)
        missing = sorted(set(self.first_stage_model.state_dict().keys()) - set(sd.keys()))
        if missing:
            raise LDM3DLoadError(f"the VAE weights miss {len(missing)} tensors, e.g. {missing[0]!r}",
                                 "re-download the model's vae/ folder")
        self.latent_channels = arch.ddconfig["z_channels"]
        self.ldm3d_channels = arch.channels
        self.output_channels = arch.channels
        self.downscale_ratio = self.upscale_ratio = arch.scale
        self.scaling_factor = float(scaling_factor)
        self.source = source

    # -- raw RGBD paths (the LDM3D nodes use these)
    def decode_rgbd(self, samples: torch.Tensor) -> torch.Tensor:
        """Latent [B,4,h,w] -> all decoded channels [B,H,W,C] in [0,1] (fp32)."""
        return super().decode(samples)

    def decode_rgbd_tiled(self, samples: torch.Tensor, tile: int, overlap: int, circular_x: bool = False,
                          pbar=None) -> torch.Tensor:
        """Tiled / circular decode (ldm3d_core.tiling) -> [B,H,W,C] in [0,1]; tile and overlap in latent px."""
        self.throw_exception_if_invalid()
        memory = self.memory_used_decode((1, samples.shape[1], min(tile, samples.shape[2]),
                                          min(tile, samples.shape[3])), self.vae_dtype)
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory)
        progress = None if pbar is None else (lambda done, total: pbar.update_absolute(done, total))
        out = tiling.decode_tiled(samples, self._decode_raw, tile, overlap, self.upscale_ratio,
                                  circular_x=circular_x, progress=progress)
        return self.process_output(out.to(self.output_device)).movedim(1, -1)

    def decode_rgbd_circular(self, samples: torch.Tensor, pad: int) -> torch.Tensor:
        """Untiled decode with `pad` wrapped latent columns each side (seamless 360) -> [B,H,W,C]."""
        self.throw_exception_if_invalid()
        padded_shape = (samples.shape[0], samples.shape[1], samples.shape[2], samples.shape[3] + 2 * pad)
        comfy.model_management.load_models_gpu([self.patcher], memory_required=self.memory_used_decode(
            padded_shape, self.vae_dtype))
        out = tiling.decode_circular(samples, self._decode_raw, pad, self.upscale_ratio)
        return self.process_output(out.to(self.output_device)).movedim(1, -1)

    def _decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        return self.first_stage_model.decode(latent.to(self.vae_dtype).to(self.device)).float()

    def encode_rgbd(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """IMAGE [B,H,W,3] + depth [B,H,W] (both [0,1]) -> latent [B,4,h,w] (unscaled, like VAE Encode)."""
        return super().encode(rgbd.merge_rgbd(rgb, depth, self.ldm3d_channels))

    # -- stock node compatibility
    def decode(self, samples_in, vae_options={}):
        return self.decode_rgbd(samples_in)[..., :3]

    def decode_tiled_(self, samples, tile_x=64, tile_y=64, overlap=16):  # OOM fallback of decode()
        tile = max(8, min(tile_x, tile_y))
        out = tiling.decode_tiled(samples, self._decode_raw, tile, min(overlap, tile - 1), self.upscale_ratio)
        return self.process_output(out.to(self.output_device))

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        tile = min(tile_x or 64, tile_y or 64)
        return self.decode_rgbd_tiled(samples, tile, min(overlap if overlap is not None else 16, tile - 1))[..., :3]

    def encode(self, pixel_samples):
        if pixel_samples.shape[-1] != self.ldm3d_channels:
            raise ValueError(f"LDM3D VAE: input 'pixels' = IMAGE with {pixel_samples.shape[-1]} channels: this "
                             f"{self.ldm3d_channels}-channel LDM3D VAE also needs depth. Fix: use the 'LDM3D Encode' "
                             "node (SDL3D_LDM3DEncode) with an IMAGE and a depth MASK")
        return super().encode(pixel_samples)

    def encode_tiled(self, pixel_samples, *args, **kwargs):
        return self.encode(pixel_samples)


def is_ldm3d_vae(vae) -> bool:
    return isinstance(vae, LDM3DVAE)


# ---------------------------------------------------------------- the UNet


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
            raise ValueError("LDM3D-SR model: conditioning lacks the low-res RGBD latent. Fix: pass positive and "
                             "negative through 'LDM3D Upscale Conditioning' (SDL3D_LDM3DUpscaleConditioning)")
        out = super().extra_conds(**kwargs)
        level = int(kwargs.get("ldm3d_noise_level", 0))
        classes = self.model_config.unet_config.get("num_classes")
        if isinstance(classes, int) and not 0 <= level < classes:
            raise ValueError(f"LDM3D-SR model: noise_level {level} is outside the UNet's {classes} class labels. "
                             f"Fix: set noise_level in 'LDM3D Upscale Conditioning' to 0..{classes - 1} (default 20)")
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


def unet_config_from_diffusers(cfg: dict) -> dict:
    """ComfyUI UNetModel arguments from a diffusers UNet2DConditionModel config.json (SD1.x family only)."""
    def refuse(what):
        raise LDM3DLoadError(f"unet/config.json: {what} is not an SD1.x-shaped LDM3D UNet",
                             "use an Intel LDM3D model folder (ldm3d, ldm3d-4c, ldm3d-pano, ldm3d-sr)")

    down, up = list(cfg.get("down_block_types", [])), list(cfg.get("up_block_types", []))
    blocks = list(cfg.get("block_out_channels", []))
    if not down or len(down) != len(up) or len(down) != len(blocks):
        refuse(f"block types {down} / {up} with block_out_channels {blocks}")
    if any(b not in (_CROSS_DOWN, _PLAIN_DOWN) for b in down) or any(b not in (_CROSS_UP, _PLAIN_UP) for b in up):
        refuse(f"block types {down} / {up}")
    if cfg.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        refuse(f"mid_block_type {cfg.get('mid_block_type')!r}")
    for key, ok in (("class_embed_type", None), ("addition_embed_type", None), ("time_embedding_type", "positional"),
                    ("flip_sin_to_cos", True), ("freq_shift", 0), ("only_cross_attention", False),
                    ("dual_cross_attention", False), ("encoder_hid_dim", None)):
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
        "use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
        "adm_in_channels": None, "in_channels": cfg.get("in_channels", 4), "out_channels": cfg.get("out_channels", 4),
        "model_channels": model_channels, "num_res_blocks": layers, "transformer_depth": depth,
        "transformer_depth_output": depth_out, "channel_mult": [b // model_channels for b in blocks],
        "transformer_depth_middle": tl, "use_linear_in_transformer": bool(cfg.get("use_linear_projection", False)),
        "context_dim": context, "num_heads": heads, "num_head_channels": -1,
        "use_temporal_attention": False, "use_temporal_resblock": False,
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
        raise LDM3DLoadError("the checkpoint's UNet is not SD1.x shaped (768-d cross attention, no ADM input)",
                             "load an LDM3D checkpoint (model.diffusion_model.*, cond_stage_model.*, "
                             "first_stage_model.*)")
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
        raise LDM3DLoadError(f"scheduler prediction_type {prediction!r} is not supported "
                             f"(supported: {', '.join(PREDICTION_TYPES)})", "use an LDM3D model's own scheduler/")
    schedule = cfg.get("beta_schedule", "scaled_linear")
    if schedule not in BETA_SCHEDULES:
        raise LDM3DLoadError(f"scheduler beta_schedule {schedule!r} is not supported "
                             f"(supported: {', '.join(BETA_SCHEDULES)})", "use an LDM3D model's own scheduler/")
    if cfg.get("trained_betas") is not None:
        raise LDM3DLoadError("scheduler trained_betas are not supported", "use an LDM3D model's own scheduler/")
    settings = {"beta_schedule": BETA_SCHEDULES[schedule], "linear_start": float(cfg.get("beta_start", 0.00085)),
                "linear_end": float(cfg.get("beta_end", 0.012)),
                "timesteps": int(cfg.get("num_train_timesteps", 1000)),
                "zsnr": bool(cfg.get("rescale_betas_zero_snr", False))}
    return settings, PREDICTION_TYPES[prediction], prediction


def build_model(unet_sd: dict, unet_config: dict, sampling: dict, model_type, scale_factor: float):
    """ComfyUI ModelPatcher for LDM-keyed UNet weights; every weight must fit (strict)."""
    load_device = comfy.model_management.get_torch_device()
    offload_device = comfy.model_management.unet_offload_device()
    model_config = LDM3DModelConfig(unet_config, sampling, model_type, scale_factor)
    unet_dtype = comfy.model_management.unet_dtype(model_params=comfy.utils.calculate_parameters(unet_sd),
                                                   supported_dtypes=list(model_config.supported_inference_dtypes),
                                                   weight_dtype=comfy.utils.weight_dtype(unet_sd))
    manual_cast = comfy.model_management.unet_manual_cast(unet_dtype, load_device,
                                                           model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(unet_dtype, manual_cast)
    model = model_config.get_model(unet_sd, "")
    model = model.to(offload_device)
    missing, unexpected = model.diffusion_model.load_state_dict(unet_sd, strict=False)
    if missing or unexpected:
        raise LDM3DLoadError(f"UNet weights do not fit the config: {len(missing)} missing (e.g. "
                             f"{missing[:1]}), {len(unexpected)} unexpected (e.g. {unexpected[:1]})",
                             "check that unet/config.json belongs to these weights")
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def build_clip(text_sd: dict):
    """ComfyUI SD1 CLIP from HF CLIPTextModel keys (text_model.*, or unprefixed); must be CLIP-L shaped."""
    text_sd = {(k if k.startswith("text_model.") or k.startswith("text_projection") else f"text_model.{k}"): v
               for k, v in text_sd.items()}
    emb = text_sd.get("text_model.embeddings.token_embedding.weight")
    if emb is None or tuple(emb.shape) != (49408, 768) or "text_model.encoder.layers.11.mlp.fc1.weight" not in text_sd:
        raise LDM3DLoadError("the text encoder is not CLIP ViT-L/14 (49408 x 768 tokens, 12 layers)",
                             "use the text_encoder/ folder of an Intel LDM3D model")
    embeddings = folder_paths.get_folder_paths("embeddings") if "embeddings" in folder_paths.folder_names_and_paths \
        else None
    return comfy.sd.load_text_encoder_state_dicts([text_sd], embedding_directory=embeddings,
                                                  clip_type=comfy.sd.CLIPType.STABLE_DIFFUSION)


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
    raise LDM3DLoadError(f"{component}/ in {folder} has no weights ({' or '.join(WEIGHT_NAMES[:2])})",
                         f"download the model's {component}/ folder completely")


def load_diffusers_folder(folder: str) -> LoadedLDM3D:
    """Load a diffusers-layout LDM3D folder (Intel/ldm3d, ldm3d-4c, ldm3d-pano, ldm3d-sr)."""
    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise LDM3DLoadError(f"{folder} has no model_index.json", "point at the model's top folder")
    index = _read_json(os.path.join(folder, "model_index.json"))
    for component in REQUIRED_COMPONENTS:
        if not os.path.isdir(os.path.join(folder, component)):
            raise LDM3DLoadError(f"model folder {folder} lacks the '{component}/' component",
                                 f"download the complete model including {component}/ (Intel LDM3D layout: "
                                 "model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    sched_path = os.path.join(folder, "scheduler", "scheduler_config.json")
    sched = _read_json(sched_path) if os.path.isfile(sched_path) else None
    if sched is None:
        raise LDM3DLoadError(f"{folder}/scheduler has no scheduler_config.json", "re-download scheduler/")
    sampling, model_type, prediction = sampling_from_scheduler(sched)
    vae_cfg_path = os.path.join(folder, "vae", "config.json")
    vae_cfg = _read_json(vae_cfg_path) if os.path.isfile(vae_cfg_path) else {}
    scale = float(vae_cfg.get("scaling_factor", DEFAULT_SCALING))
    if vae_cfg.get("shift_factor") not in (None, 0, 0.0):
        raise LDM3DLoadError(f"vae shift_factor {vae_cfg.get('shift_factor')} is not supported",
                             "use an LDM3D VAE (shift 0)")
    unet_cfg = _read_json(os.path.join(folder, "unet", "config.json"))
    unet_config = unet_config_from_diffusers(unet_cfg)
    mapping = comfy.utils.unet_to_diffusers(unet_config)
    mapping["class_embedding.weight"] = "label_emb.weight"
    unet_raw = _weights_in(folder, "unet")
    unknown = [k for k in unet_raw if k not in mapping]
    if unknown:
        raise LDM3DLoadError(f"unet weights hold {len(unknown)} keys the config does not explain, e.g. {unknown[0]!r}",
                             "check that unet/config.json belongs to these weights")
    unet_sd = {mapping[k]: v for k, v in unet_raw.items()}
    model = build_model(unet_sd, unet_config, sampling, model_type, scale)
    clip = build_clip(_weights_in(folder, "text_encoder"))
    vae = LDM3DVAE(_weights_in(folder, "vae"), scale, source=folder)
    if not os.path.isdir(os.path.join(folder, "tokenizer")):
        log.warning("LDM3D: %s has no tokenizer/; using ComfyUI's bundled CLIP tokenizer (same vocabulary)", folder)
    info = {"source": os.path.basename(folder.rstrip("/\\")), "pipeline": index.get("_class_name", "?"),
            "vae_channels": vae.ldm3d_channels, "scaling_factor": scale, "prediction_type": prediction,
            "scheduler": sched.get("_class_name", "?"), "unet_in_channels": unet_config["in_channels"],
            "native_size": int(unet_cfg.get("sample_size", 64)) * vae.upscale_ratio}
    if "max_noise_level" in index:
        info["max_noise_level"] = int(index["max_noise_level"])
        vae.max_noise_level = info["max_noise_level"]  # LDM3D Upscale Conditioning checks noise_level against it
    return LoadedLDM3D(model, clip, vae, info)


def load_single_file(path: str) -> LoadedLDM3D:
    """Load an LDM-format single-file LDM3D checkpoint (model.diffusion_model.*, cond_stage_model.*, first_stage_model.*)."""
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    prefixes = {"model.diffusion_model.": "UNet", "first_stage_model.": "VAE", "cond_stage_model.": "text encoder"}
    for prefix, what in prefixes.items():
        if not any(k.startswith(prefix) for k in sd):
            raise LDM3DLoadError(f"{os.path.basename(path)} has no {what} weights ({prefix}*)",
                                 "use a full LDM3D checkpoint, or the diffusers folder")
    unet_config = unet_config_from_checkpoint(sd)
    unet_sd = comfy.utils.state_dict_prefix_replace(sd, {"model.diffusion_model.": ""}, filter_keys=True)
    vae_sd = comfy.utils.state_dict_prefix_replace(sd, {"first_stage_model.": ""}, filter_keys=True)
    clip_sd = comfy.utils.state_dict_prefix_replace(sd, {"cond_stage_model.transformer.": ""}, filter_keys=True)
    clip_sd = {(k if k.startswith("text_model.") else f"text_model.{k}"): v for k, v in clip_sd.items()}
    sampling, model_type, prediction = sampling_from_scheduler(None)
    vae = LDM3DVAE(vae_sd, DEFAULT_SCALING, source=path)
    model = build_model(unet_sd, unet_config, sampling, model_type, DEFAULT_SCALING)
    clip = build_clip(clip_sd)
    info = {"source": os.path.basename(path), "pipeline": "single-file checkpoint", "vae_channels": vae.ldm3d_channels,
            "scaling_factor": DEFAULT_SCALING, "prediction_type": prediction + " (assumed: no scheduler config)",
            "unet_in_channels": unet_config["in_channels"]}
    return LoadedLDM3D(model, clip, vae, info)


def load_ldm3d(name: str) -> LoadedLDM3D:
    """Load a model by its combo name (see module docstring)."""
    path = resolve_model(name)
    if os.path.isdir(path):
        return load_diffusers_folder(path)
    return load_single_file(path)
