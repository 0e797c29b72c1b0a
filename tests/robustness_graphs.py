"""API-format graph builders for the robustness suite (tests/robustness_cases.py): small graphs around one pack
node, each taking the bad value(s) as keyword arguments."""

from __future__ import annotations

# ---------------------------------------------------------------- graph pieces (API format)


def image(w=16, h=8, batch=1):
    return {"class_type": "EmptyImage", "inputs": {"width": w, "height": h, "batch_size": batch, "color": 0x808080}}


def mask(w=16, h=8, value=0.5):
    return {"class_type": "SolidMask", "inputs": {"value": value, "width": w, "height": h}}


def preview(ref):
    return {"class_type": "PreviewImage", "inputs": {"images": ref}}


def mask_preview(graph, ref):
    graph["mp"] = {"class_type": "MaskToImage", "inputs": {"mask": ref}}
    graph["out"] = preview(["mp", 0])
    return graph


STEREO = {
    "ipd_m": 0.064,
    "depth_mode": "inverse",
    "near_m": 1.0,
    "far_m": 20.0,
    "invert_depth": False,
    "metric_scale_m": 10.0,
    "sphere_radius_m": 6.0,
    "displacement_m": 4.0,
    "convergence_m": 0.0,
    "pole_fade_from_deg": 60.0,
    "pole_fade_to_deg": 75.0,
    "horizontal_only": False,
    "warp": "forward",
    "fill": "background",
    "crack_px": 2,
    "edge_ratio_tau": 0.05,
    "supersample": 1,
    "layout": "top_bottom",
    "swap_eyes": False,
}
MESH = {
    "format": "glb",
    "mesh_width": 16,
    "mesh_height": 8,
    "depth_mode": "sphere_displace",
    "near_m": 1.0,
    "far_m": 20.0,
    "invert_depth": False,
    "metric_scale_m": 10.0,
    "sphere_radius_m": 6.0,
    "displacement_m": 4.0,
    "cull_edges": False,
    "edge_ratio_tau": 0.2,
    "filename_prefix": "robust/mesh",
}
SYNC = {
    "window": 64,
    "stride": 32,
    "sync_weight": 20.0,
    "sync_decay": 0.95,
    "sync_freq": 1,
    "sync_steps": 1,
    "anchor": "middle",
    "circular": False,
    "view_batch_size": 1,
    "sampler_name": "euler",
}
KSAMPLER = {**SYNC, "seed": 0, "steps": 1, "cfg": 7.5, "scheduler": "normal", "denoise": 1.0}


def stereo(**bad):
    g = {
        "img": image(),
        "d": mask(),
        "t": {"class_type": "SDL3D_Stereo360", "inputs": {"image": ["img", 0], "depth": ["d", 0], **STEREO, **bad}},
    }
    g["out"] = preview(["t", 0])
    return g


def stereo_sized(w, h, dw, dh):
    g = stereo()
    g["img"], g["d"] = image(w, h), mask(dw, dh)
    return g


def mesh(depth_value=0.5, **bad):
    return {
        "img": image(),
        "d": mask(value=depth_value),
        "t": {"class_type": "SDL3D_SaveDepthMesh", "inputs": {"image": ["img", 0], "depth": ["d", 0], **MESH, **bad}},
    }


def save_stereo(w=16, h=16, **bad):
    inputs = {"images": ["img", 0], "layout": "auto", "filename_prefix": "robust/ods", **bad}
    return {"img": image(w, h), "t": {"class_type": "SDL3D_SaveStereo360", "inputs": inputs}}


def save_depth(**bad):
    inputs = {"depth": ["d", 0], "filename_prefix": "robust/depth16", **bad}
    return {"d": mask(), "t": {"class_type": "SDL3D_SaveDepthPNG16", "inputs": inputs}}


def load_depth(name):
    return mask_preview({"t": {"class_type": "SDL3D_LoadDepthPNG", "inputs": {"image": name}}}, ["t", 0])


def unpack(**bad):
    g = {
        "img": image(),
        "t": {"class_type": "SDL3D_UnpackDepthRGB", "inputs": {"packed": ["img", 0], "mode": "exact", **bad}},
    }
    return mask_preview(g, ["t", 0])


def pack_with_image():
    g = {"img": image(), "t": {"class_type": "SDL3D_PackDepthRGB", "inputs": {"depth": ["img", 0]}}}
    g["out"] = preview(["t", 0])
    return g


def stereo_pack(left=(16, 8), right=(16, 8), **bad):
    g = {
        "l": image(*left),
        "r": image(*right),
        "t": {
            "class_type": "SDL3D_StereoPack",
            "inputs": {"left": ["l", 0], "right": ["r", 0], "layout": "top_bottom", "swap_eyes": False, **bad},
        },
    }
    g["out"] = preview(["t", 0])
    return g


def sd_base(latent_w=64, latent_h=64, vae="taesd"):
    return {
        "ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdl3d_tiny_sd15.safetensors"}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ck", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ck", 1]}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": latent_w, "height": latent_h, "batch_size": 1}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": vae}},
    }


def ksampler(latent_w=64, latent_h=64, **bad):
    g = sd_base(latent_w, latent_h)
    g["t"] = {
        "class_type": "SDL3D_SyncDiffusionKSampler",
        "inputs": {
            "model": ["ck", 0],
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "latent_image": ["lat", 0],
            "vae": ["vae", 0],
            **KSAMPLER,
            **bad,
        },
    }
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["t", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def custom_sampler(sampler_node: dict, extra: dict | None = None):
    g = sd_base()
    g.update(extra or {})
    g["t"] = sampler_node
    g["sig"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": ["ck", 0], "scheduler": "normal", "steps": 1, "denoise": 1.0},
    }
    g["sc"] = {
        "class_type": "SamplerCustom",
        "inputs": {
            "model": ["ck", 0],
            "add_noise": True,
            "noise_seed": 0,
            "cfg": 7.5,
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "sampler": ["t", 0],
            "sigmas": ["sig", 0],
            "latent_image": ["lat", 0],
        },
    }
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sc", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def sync_sampler(**bad):
    return custom_sampler({"class_type": "SDL3D_SyncDiffusionSampler", "inputs": {"vae": ["vae", 0], **SYNC, **bad}})


def lpips(**bad):
    g = sync_sampler()
    g["s"] = g.pop("t")
    g["s"]["inputs"]["lpips"] = ["t", 0]
    g["sc"]["inputs"]["sampler"] = ["s", 0]
    g["t"] = {"class_type": "SDL3D_LPIPSLoader", "inputs": {"net": "vgg", "resolution": 0, **bad}}
    return g


def ldm3d_loader(name="ldm3d-4c"):
    return {"class_type": "SDL3D_LDM3DLoader", "inputs": {"model_name": name}}


def loader_case(name):
    g = ldm3d_decode(vae=["t", 2])
    g["dec"] = g.pop("t")
    g.pop("ld")
    g["t"] = ldm3d_loader(name)
    g["out"] = preview(["dec", 0])
    return g


def ldm3d_decode(latent=(64, 64), vae=None, **bad):
    g = {
        "ld": ldm3d_loader(),
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": latent[0], "height": latent[1], "batch_size": 1}},
        "t": {
            "class_type": "SDL3D_LDM3DDecode",
            "inputs": {
                "samples": ["lat", 0],
                "vae": vae or ["ld", 2],
                "depth_6ch": "exact",
                "tiled": False,
                "tile_size": 512,
                "overlap": 128,
                "circular": False,
                **bad,
            },
        },
    }
    g["out"] = preview(["t", 0])
    return g


def ldm3d_encode(size=(16, 16), depth_size=None):
    g = {
        "ld": ldm3d_loader(),
        "img": image(*size),
        "d": mask(*(depth_size or size)),
        "t": {"class_type": "SDL3D_LDM3DEncode", "inputs": {"image": ["img", 0], "depth": ["d", 0], "vae": ["ld", 2]}},
        "dec": {
            "class_type": "SDL3D_LDM3DDecode",
            "inputs": {
                "samples": ["t", 0],
                "vae": ["ld", 2],
                "depth_6ch": "exact",
                "tiled": False,
                "tile_size": 512,
                "overlap": 128,
                "circular": False,
            },
        },
    }
    g["out"] = preview(["dec", 0])
    return g


def upscale(**bad):
    inputs = {
        "positive": ["pos", 0],
        "negative": ["pos", 0],
        "vae": ["ld", 2],
        "image": ["img", 0],
        "depth": ["d", 0],
        "width": 64,
        "height": 64,
        "noise_level": 20,
        **bad,
    }
    g = {
        "ld": ldm3d_loader("ldm3d-sr"),
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ld", 1]}},
        "img": image(16, 16),
        "d": mask(16, 16),
        "t": {"class_type": "SDL3D_LDM3DUpscaleConditioning", "inputs": inputs},
        "dec": {
            "class_type": "SDL3D_LDM3DDecode",
            "inputs": {
                "samples": ["t", 2],
                "vae": ["ld", 2],
                "depth_6ch": "exact",
                "tiled": False,
                "tile_size": 512,
                "overlap": 128,
                "circular": False,
            },
        },
    }
    g["out"] = preview(["dec", 0])
    return g


# ---------------------------------------------------------------- the cases: (id, graph builder, input, expected)
# expected: "400" = rejected at queue time; "run" = execution error naming node and input.


def vae360(latent=(64, 64), vae="taesd", **bad):
    """VAE Decode (360 / Tiled) of an empty latent of ``latent`` = (width, height) pixels."""
    g = sd_base(*latent, vae=vae)
    g["t"] = {
        "class_type": "SDL3D_VAEDecode360",
        "inputs": {"samples": ["lat", 0], "vae": ["vae", 0], "circular": True, "tile_size": 0, "overlap": 64, **bad},
    }
    g["out"] = preview(["t", 0])
    return g


def vae_encode_tiled(size=(64, 64), ldm3d_vae=False, vae="taesd", **bad):
    """VAE Encode (Tiled) of a grey image of ``size`` = (width, height); ldm3d_vae: the LDM3D Loader's 6-channel VAE."""
    g = sd_base(vae=vae)
    g["img"] = image(*size)
    g["t"] = {
        "class_type": "SDL3D_VAEEncodeTiled",
        "inputs": {"pixels": ["img", 0], "vae": ["vae", 0], "circular": True, "tile_size": 0, "overlap": 64, **bad},
    }
    if ldm3d_vae:
        g["ld"] = ldm3d_loader("ldm3d")
        g["t"]["inputs"]["vae"] = ["ld", 2]
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["t", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def model_patch(latent=(64, 64), **bad):
    """The Model Patch in front of a stock KSampler (1 step) on an empty latent of ``latent`` = (width, height)."""
    g = sd_base(*latent)
    g["t"] = {
        "class_type": "SDL3D_SyncDiffusionModelPatch",
        "inputs": {"model": ["ck", 0], "window": 64, "stride": 32, "circular": False, "view_batch_size": 0, **bad},
    }
    g["ks"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["t", 0],
            "positive": ["pos", 0],
            "negative": ["neg", 0],
            "latent_image": ["lat", 0],
            "seed": 0,
            "steps": 1,
            "cfg": 7.5,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    }
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def coherence(size=(64, 32), batch=1, **bad):
    return {
        "img": image(*size, batch=batch),
        "t": {"class_type": "SDL3D_SyncDiffusionCoherence", "inputs": {"image": ["img", 0], "crop_size": 32, **bad}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["t", 2]}},
    }
