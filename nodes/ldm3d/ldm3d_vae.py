"""The LDM3D autoencoder as a ComfyUI VAE: 4 channels (RGB + depth: ldm3d-4c, -pano, -sr) or 6 (RGB + RGB-like
depth: ldm3d), architecture read from the weights (channels = decoder.conv_out out channels), always fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import comfy.diffusers_convert
import comfy.model_management
import comfy.sd
import comfy.utils
import torch

from ...ldm3d_core import rgbd, tiling
from ..vae.whole_image import per_sample, whole_image_norm
from .model_files import LDM3DLoadError

DEFAULT_SCALING = 0.18215


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
        raise LDM3DLoadError(
            f"the VAE weights lack {missing[0]!r} (not a KL autoencoder)", "use the vae/ folder of an Intel LDM3D model"
        )
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
        raise LDM3DLoadError(
            "the VAE has attention inside its resolution levels (not an SD/LDM3D VAE)",
            "use the vae/ folder of an Intel LDM3D model",
        )
    if ch % 32 or any((ch * m) % 32 for m in ch_mult):
        raise LDM3DLoadError(
            f"VAE channel widths {[ch * m for m in ch_mult]} are not multiples of 32 "
            "(ComfyUI's VAE uses 32 group-norm groups)",
            "use an LDM3D VAE",
        )
    if out_ch not in rgbd.LDM3D_CHANNELS or in_ch != out_ch:
        raise LDM3DLoadError(
            f"the VAE maps {in_ch} -> {out_ch} channels; an LDM3D VAE has 4 (RGB + depth) or 6 (RGB + RGB-like depth)",
            "load an Intel LDM3D model (ldm3d, ldm3d-4c, ldm3d-pano, "
            "ldm3d-sr); for a plain SD VAE use the stock VAE Decode",
        )
    ddconfig = {
        "double_z": sd["encoder.conv_out.weight"].shape[0] == 2 * z_channels,
        "z_channels": z_channels,
        "resolution": 256,
        "in_channels": in_ch,
        "out_ch": out_ch,
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": res_blocks,
        "attn_resolutions": [],
        "dropout": 0.0,
    }
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
                raise LDM3DLoadError(
                    "the diffusers VAE layout is not the 4-level, 2-resblock SD layout",
                    "use the vae/ folder of an Intel LDM3D model",
                )
        if "decoder.post_quant_conv.weight" in sd:
            sd = comfy.utils.state_dict_prefix_replace(
                sd, {"decoder.post_quant_conv.": "post_quant_conv.", "encoder.quant_conv.": "quant_conv."}
            )
        arch = vae_arch_from_weights(sd)
        super().__init__(
            sd=sd, config={"params": {"ddconfig": arch.ddconfig, "embed_dim": arch.embed_dim}}, dtype=torch.float32
        )
        missing = sorted(set(self.first_stage_model.state_dict().keys()) - set(sd.keys()))
        if missing:
            raise LDM3DLoadError(
                f"the VAE weights miss {len(missing)} tensors, e.g. {missing[0]!r}",
                "re-download the model's vae/ folder",
            )
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

    def decode_rgbd_tiled(
        self, samples: torch.Tensor, tile: int, overlap: int, circular_x: bool = False, pbar=None
    ) -> torch.Tensor:
        """Tiled / circular decode (ldm3d_core.tiling) -> [B,H,W,C] in [0,1]; tile and overlap in latent px.
        The decoder's GroupNorms use the whole image's statistics and its attention runs on the whole image
        (nodes/vae/whole_image.py), as in VAE Decode (360 / Tiled)."""
        self.throw_exception_if_invalid()
        memory = self.memory_used_decode(
            (1, samples.shape[1], min(tile, samples.shape[2]), min(tile, samples.shape[3])), self.vae_dtype
        )
        comfy.model_management.load_models_gpu([self.patcher], memory_required=memory)
        progress = None if pbar is None else (lambda done, total: pbar.update_absolute(done, total))
        out = per_sample(
            tiling.decode_tiled,
            samples,
            self._decode_raw,
            tile,
            overlap,
            self.upscale_ratio,
            circular_x=circular_x,
            progress=progress,
            whole_image=whole_image_norm(self, "decoder"),
        )
        return self.process_output(out.to(self.output_device)).movedim(1, -1)

    def decode_rgbd_circular(self, samples: torch.Tensor, pad: int) -> torch.Tensor:
        """Untiled decode with `pad` wrapped latent columns each side (seamless 360) -> [B,H,W,C]."""
        self.throw_exception_if_invalid()
        padded_shape = (samples.shape[0], samples.shape[1], samples.shape[2], samples.shape[3] + 2 * pad)
        comfy.model_management.load_models_gpu(
            [self.patcher], memory_required=self.memory_used_decode(padded_shape, self.vae_dtype)
        )
        out = tiling.decode_circular(samples, self._decode_raw, pad, self.upscale_ratio)
        return self.process_output(out.to(self.output_device)).movedim(1, -1)

    def _decode_raw(self, latent: torch.Tensor) -> torch.Tensor:
        return self.first_stage_model.decode(latent.to(self.vae_dtype).to(self.device)).float()

    def encode_rgbd(self, rgb: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """IMAGE [B,H,W,3] + depth [B,H,W] (both [0,1]) -> latent [B,4,h,w] (unscaled, like VAE Encode)."""
        return super().encode(rgbd.merge_rgbd(rgb, depth, self.ldm3d_channels))

    # -- stock node compatibility
    def decode(self, samples_in, vae_options=None):
        """RGB part [B,H,W,3]; `vae_options` (keyword arguments of the decoder, for other model families) unused."""
        return self.decode_rgbd(samples_in)[..., :3]

    # comfy.sd.VAE.decode falls back to the private `decode_tiled_` on an out-of-memory error, and ComfyUI's
    # version tiles with comfy.utils.tiled_scale's default of 3 output channels, which breaks on 4 or 6. No public
    # hook replaces that fallback short of copying decode's batching, so this overrides it with the same signature;
    # tests/test_ldm3d_comfy_contract.py fails if ComfyUI renames it, changes the signature or stops calling it.
    def decode_tiled_(self, samples, tile_x=64, tile_y=64, overlap=16):
        tile = max(8, min(tile_x, tile_y))
        out = tiling.decode_tiled(samples, self._decode_raw, tile, min(overlap, tile - 1), self.upscale_ratio)
        return self.process_output(out.to(self.output_device))

    def decode_tiled(self, samples, tile_x=None, tile_y=None, overlap=None, tile_t=None, overlap_t=None):
        tile = min(tile_x or 64, tile_y or 64)
        return self.decode_rgbd_tiled(samples, tile, min(overlap if overlap is not None else 16, tile - 1))[..., :3]

    def encode(self, pixel_samples):
        if pixel_samples.shape[-1] != self.ldm3d_channels:
            raise ValueError(
                f"LDM3D VAE: input 'pixels' = IMAGE with {pixel_samples.shape[-1]} channels: this "
                f"{self.ldm3d_channels}-channel LDM3D VAE also needs depth. Fix: use the 'LDM3D Encode' "
                "node (SDL3D_LDM3DEncode) with an IMAGE and a depth MASK"
            )
        return super().encode(pixel_samples)

    def encode_tiled(self, pixel_samples, *args, **kwargs):
        return self.encode(pixel_samples)


def is_ldm3d_vae(vae) -> bool:
    return isinstance(vae, LDM3DVAE)
