"""The robustness suite's cases (tests/test_robustness_api.py): API-format graph builders, each with one bad
value, and CASES = (id, graph builder, input at fault, expected answer). docs/hardening.md lists them."""

from __future__ import annotations

import math

NAN, INF = math.nan, math.inf

# ---------------------------------------------------------------- graph pieces (API format)


def image(w=16, h=8):
    return {"class_type": "EmptyImage", "inputs": {"width": w, "height": h, "batch_size": 1, "color": 0x808080}}


def mask(w=16, h=8, value=0.5):
    return {"class_type": "SolidMask", "inputs": {"value": value, "width": w, "height": h}}


def preview(ref):
    return {"class_type": "PreviewImage", "inputs": {"images": ref}}


def mask_preview(graph, ref):
    graph["mp"] = {"class_type": "MaskToImage", "inputs": {"mask": ref}}
    graph["out"] = preview(["mp", 0])
    return graph


STEREO = {"ipd_m": 0.064, "depth_mode": "inverse", "near_m": 1.0, "far_m": 20.0, "invert_depth": False,
          "metric_scale_m": 10.0, "sphere_radius_m": 6.0, "displacement_m": 4.0, "convergence_m": 0.0,
          "pole_fade_from_deg": 60.0, "pole_fade_to_deg": 75.0, "horizontal_only": False, "warp": "forward",
          "fill": "background", "crack_px": 2, "edge_ratio_tau": 0.05, "supersample": 1, "layout": "top_bottom",
          "swap_eyes": False}
MESH = {"format": "glb", "mesh_width": 16, "mesh_height": 8, "depth_mode": "sphere_displace", "near_m": 1.0,
        "far_m": 20.0, "invert_depth": False, "metric_scale_m": 10.0, "sphere_radius_m": 6.0, "displacement_m": 4.0,
        "cull_edges": False, "edge_ratio_tau": 0.2, "filename_prefix": "robust/mesh"}
SYNC = {"window": 64, "stride": 32, "sync_weight": 20.0, "sync_decay": 0.95, "sync_freq": 1, "sync_steps": 1,
        "anchor": "middle", "circular": False, "view_batch_size": 1, "sampler_name": "euler"}
KSAMPLER = {**SYNC, "seed": 0, "steps": 1, "cfg": 7.5, "scheduler": "normal", "denoise": 1.0}


def stereo(**bad):
    g = {"img": image(), "d": mask(), "t": {"class_type": "SDL3D_Stereo360",
                                           "inputs": {"image": ["img", 0], "depth": ["d", 0], **STEREO, **bad}}}
    g["out"] = preview(["t", 0])
    return g


def stereo_sized(w, h, dw, dh):
    g = stereo()
    g["img"], g["d"] = image(w, h), mask(dw, dh)
    return g


def mesh(depth_value=0.5, **bad):
    return {"img": image(), "d": mask(value=depth_value),
            "t": {"class_type": "SDL3D_SaveDepthMesh", "inputs": {"image": ["img", 0], "depth": ["d", 0], **MESH, **bad}}}


def save_stereo(w=16, h=16, **bad):
    inputs = {"images": ["img", 0], "layout": "auto", "filename_prefix": "robust/ods", **bad}
    return {"img": image(w, h), "t": {"class_type": "SDL3D_SaveStereo360", "inputs": inputs}}


def save_depth(**bad):
    inputs = {"depth": ["d", 0], "filename_prefix": "robust/depth16", **bad}
    return {"d": mask(), "t": {"class_type": "SDL3D_SaveDepthPNG16", "inputs": inputs}}


def load_depth(name):
    return mask_preview({"t": {"class_type": "SDL3D_LoadDepthPNG", "inputs": {"image": name}}}, ["t", 0])


def unpack(**bad):
    g = {"img": image(), "t": {"class_type": "SDL3D_UnpackDepthRGB", "inputs": {"packed": ["img", 0], "mode": "exact",
                                                                              **bad}}}
    return mask_preview(g, ["t", 0])


def pack_with_image():
    g = {"img": image(), "t": {"class_type": "SDL3D_PackDepthRGB", "inputs": {"depth": ["img", 0]}}}
    g["out"] = preview(["t", 0])
    return g


def stereo_pack(left=(16, 8), right=(16, 8), **bad):
    g = {"l": image(*left), "r": image(*right),
         "t": {"class_type": "SDL3D_StereoPack", "inputs": {"left": ["l", 0], "right": ["r", 0], "layout": "top_bottom",
                                                          "swap_eyes": False, **bad}}}
    g["out"] = preview(["t", 0])
    return g


def sd_base(latent_w=64, latent_h=64):
    return {"ck": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdl3d_tiny_sd15.safetensors"}},
            "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ck", 1]}},
            "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ck", 1]}},
            "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": latent_w, "height": latent_h,
                                                                 "batch_size": 1}},
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}}}


def ksampler(latent_w=64, latent_h=64, **bad):
    g = sd_base(latent_w, latent_h)
    g["t"] = {"class_type": "SDL3D_SyncDiffusionKSampler",
              "inputs": {"model": ["ck", 0], "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0],
                         "vae": ["vae", 0], **KSAMPLER, **bad}}
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["t", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def custom_sampler(sampler_node: dict, extra: dict | None = None):
    g = sd_base()
    g.update(extra or {})
    g["t"] = sampler_node
    g["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ck", 0], "scheduler": "normal", "steps": 1,
                                                           "denoise": 1.0}}
    g["sc"] = {"class_type": "SamplerCustom", "inputs": {"model": ["ck", 0], "add_noise": True, "noise_seed": 0,
                                                         "cfg": 7.5, "positive": ["pos", 0], "negative": ["neg", 0],
                                                         "sampler": ["t", 0], "sigmas": ["sig", 0],
                                                         "latent_image": ["lat", 0]}}
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
    g = {"ld": ldm3d_loader(),
         "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": latent[0], "height": latent[1], "batch_size": 1}},
         "t": {"class_type": "SDL3D_LDM3DDecode",
               "inputs": {"samples": ["lat", 0], "vae": vae or ["ld", 2], "depth_6ch": "exact", "tiled": False,
                          "tile_size": 512, "overlap": 128, "circular": False, **bad}}}
    g["out"] = preview(["t", 0])
    return g


def ldm3d_encode(size=(16, 16), depth_size=None):
    g = {"ld": ldm3d_loader(), "img": image(*size), "d": mask(*(depth_size or size)),
         "t": {"class_type": "SDL3D_LDM3DEncode", "inputs": {"image": ["img", 0], "depth": ["d", 0], "vae": ["ld", 2]}},
         "dec": {"class_type": "SDL3D_LDM3DDecode",
                 "inputs": {"samples": ["t", 0], "vae": ["ld", 2], "depth_6ch": "exact", "tiled": False,
                            "tile_size": 512, "overlap": 128, "circular": False}}}
    g["out"] = preview(["dec", 0])
    return g


def upscale(**bad):
    inputs = {"positive": ["pos", 0], "negative": ["pos", 0], "vae": ["ld", 2], "image": ["img", 0],
              "depth": ["d", 0], "width": 64, "height": 64, "noise_level": 20, **bad}
    g = {"ld": ldm3d_loader("ldm3d-sr"), "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a", "clip": ["ld", 1]}},
         "img": image(16, 16), "d": mask(16, 16), "t": {"class_type": "SDL3D_LDM3DUpscaleConditioning", "inputs": inputs},
         "dec": {"class_type": "SDL3D_LDM3DDecode",
                 "inputs": {"samples": ["t", 2], "vae": ["ld", 2], "depth_6ch": "exact", "tiled": False,
                            "tile_size": 512, "overlap": 128, "circular": False}}}
    g["out"] = preview(["dec", 0])
    return g


# ---------------------------------------------------------------- the cases: (id, graph builder, input, expected)
# expected: "400" = rejected at queue time; "run" = execution error naming node and input.

CASES = [
    # Stereo 360
    ("stereo-ipd-nan", lambda: stereo(ipd_m=NAN), "ipd_m", "400"),
    ("stereo-ipd-inf", lambda: stereo(ipd_m=INF), "ipd_m", "400"),
    ("stereo-near-nan", lambda: stereo(near_m=NAN), "near_m", "400"),
    ("stereo-far-nan", lambda: stereo(far_m=NAN), "far_m", "400"),
    ("stereo-far-neg-inf", lambda: stereo(far_m=-INF), "far_m", "400"),
    ("stereo-convergence-nan", lambda: stereo(convergence_m=NAN), "convergence_m", "400"),
    ("stereo-pole-from-nan", lambda: stereo(pole_fade_from_deg=NAN), "pole_fade_from_deg", "400"),
    ("stereo-pole-to-below-from", lambda: stereo(pole_fade_to_deg=30.0), "pole_fade_to_deg", "400"),
    ("stereo-tau-nan", lambda: stereo(edge_ratio_tau=NAN), "edge_ratio_tau", "400"),
    ("stereo-warp-unknown", lambda: stereo(warp="sideways"), "warp", "400"),
    ("stereo-fill-unknown", lambda: stereo(fill="magic"), "fill", "400"),
    ("stereo-layout-unknown", lambda: stereo(layout="diagonal"), "layout", "400"),
    ("stereo-depth-mode-unknown", lambda: stereo(depth_mode="guess"), "depth_mode", "400"),
    ("stereo-displacement-ge-radius", lambda: stereo(depth_mode="sphere_displace", displacement_m=7.0),
     "displacement_m", "400"),
    ("stereo-linear-infinite-far", lambda: stereo(depth_mode="linear", far_m=0.0), "far_m", "400"),
    ("stereo-metric-scale-nan", lambda: stereo(metric_scale_m=NAN), "metric_scale_m", "400"),
    ("stereo-crack-above-max", lambda: stereo(crack_px=99), "crack_px", "400"),
    ("stereo-supersample-above-max", lambda: stereo(supersample=3), "supersample", "400"),
    ("stereo-image-not-2to1", lambda: stereo_sized(16, 16, 16, 16), "image", "run"),
    ("stereo-depth-size-mismatch", lambda: stereo_sized(16, 8, 8, 4), "depth", "run"),
    # Save 360 Depth Mesh
    ("mesh-tau-nan", lambda: mesh(edge_ratio_tau=NAN, cull_edges=True), "edge_ratio_tau", "400"),
    ("mesh-format-unknown", lambda: mesh(format="fbx"), "format", "400"),
    ("mesh-prefix-traversal", lambda: mesh(filename_prefix="../escape/mesh"), "filename_prefix", "400"),
    ("mesh-prefix-absolute", lambda: mesh(filename_prefix="{outside}/mesh"), "filename_prefix", "400"),
    ("mesh-prefix-empty", lambda: mesh(filename_prefix=""), "filename_prefix", "400"),
    ("mesh-prefix-symlink-dir", lambda: mesh(filename_prefix="link_out/mesh"), "filename_prefix", "400"),
    ("mesh-prefix-hidden", lambda: mesh(filename_prefix="robust/.hidden"), "filename_prefix", "400"),
    ("mesh-size-8192x4096", lambda: mesh(mesh_width=8192, mesh_height=4096), "mesh_width", "run"),
    ("mesh-metric-zero-depth", lambda: mesh(depth_value=0.0, depth_mode="metric"), "depth_mode", "run"),
    ("mesh-inverse-infinite-far", lambda: mesh(depth_mode="inverse", far_m=0.0), "far_m", "400"),
    ("mesh-near-inf", lambda: mesh(near_m=INF), "near_m", "400"),
    ("mesh-width-below-min", lambda: mesh(mesh_width=4), "mesh_width", "400"),
    # Save Stereo 360
    ("save360-prefix-traversal", lambda: save_stereo(filename_prefix="../escape/ods"), "filename_prefix", "400"),
    ("save360-prefix-absolute", lambda: save_stereo(filename_prefix="{outside}/ods"), "filename_prefix", "400"),
    ("save360-prefix-symlink-dir", lambda: save_stereo(filename_prefix="link_out/ods"), "filename_prefix", "400"),
    ("save360-prefix-empty", lambda: save_stereo(filename_prefix=""), "filename_prefix", "400"),
    ("save360-prefix-inner-traversal", lambda: save_stereo(filename_prefix="a/../../ods"), "filename_prefix", "400"),
    ("save360-layout-unknown", lambda: save_stereo(layout="anaglyph"), "layout", "400"),
    ("save360-1x1-frame", lambda: save_stereo(1, 1), "images", "run"),
    # Save Depth PNG 16-bit
    ("savedepth-prefix-traversal", lambda: save_depth(filename_prefix="../../escape"), "filename_prefix", "400"),
    ("savedepth-prefix-absolute", lambda: save_depth(filename_prefix="{outside}/d"), "filename_prefix", "400"),
    ("savedepth-prefix-symlink-dir", lambda: save_depth(filename_prefix="link_out/d"), "filename_prefix", "400"),
    ("savedepth-prefix-empty", lambda: save_depth(filename_prefix=""), "filename_prefix", "400"),
    ("savedepth-prefix-no-name", lambda: save_depth(filename_prefix="robust/"), "filename_prefix", "400"),
    # Load Depth PNG (the same refusal whether or not the outside file exists)
    ("loaddepth-traversal-existing", lambda: load_depth("../secret16.png"), "image", "400"),
    ("loaddepth-traversal-missing", lambda: load_depth("../no_such_file.png"), "image", "400"),
    ("loaddepth-absolute-existing", lambda: load_depth("{outside}/secret16.png"), "image", "400"),
    ("loaddepth-absolute-etc-passwd", lambda: load_depth("/etc/passwd"), "image", "400"),
    ("loaddepth-symlink-out", lambda: load_depth("escape_link.png"), "image", "400"),
    ("loaddepth-not-an-image", lambda: load_depth("notes.png"), "image", "400"),
    ("loaddepth-missing-output-annotation", lambda: load_depth("nothing.png [output]"), "image", "400"),
    ("loaddepth-temp-traversal", lambda: load_depth("../../secret16.png [temp]"), "image", "400"),
    # Unpack / Pack / Pack Eyes
    ("unpack-mode-unknown", lambda: unpack(mode="lo_only"), "mode", "400"),
    ("pack-depth-is-image", pack_with_image, "depth", "400"),
    ("stereopack-layout-unknown", lambda: stereo_pack(layout="checker"), "layout", "400"),
    ("stereopack-eye-shapes-differ", lambda: stereo_pack(right=(32, 16)), "right", "run"),
    # SyncDiffusion LPIPS Loader
    ("lpips-net-unknown", lambda: lpips(net="squeeze"), "net", "400"),
    ("lpips-resolution-8", lambda: lpips(resolution=8), "resolution", "400"),
    ("lpips-resolution-16", lambda: lpips(resolution=16), "resolution", "400"),
    ("lpips-resolution-4096", lambda: lpips(resolution=4096), "resolution", "run"),
    # SyncDiffusion KSampler
    ("ksampler-cfg-nan", lambda: ksampler(cfg=NAN), "cfg", "400"),
    ("ksampler-cfg-inf", lambda: ksampler(cfg=INF), "cfg", "400"),
    ("ksampler-denoise-nan", lambda: ksampler(denoise=NAN), "denoise", "400"),
    ("ksampler-weight-nan", lambda: ksampler(sync_weight=NAN), "sync_weight", "400"),
    ("ksampler-decay-nan", lambda: ksampler(sync_decay=NAN), "sync_decay", "400"),
    ("ksampler-decay-20", lambda: ksampler(sync_decay=20.0), "sync_decay", "400"),
    ("ksampler-sampler-unknown", lambda: ksampler(sampler_name="euler_turbo"), "sampler_name", "400"),
    ("ksampler-scheduler-unknown", lambda: ksampler(scheduler="cosine_magic"), "scheduler", "400"),
    ("ksampler-anchor-unknown", lambda: ksampler(anchor="centre"), "anchor", "400"),
    ("ksampler-stride-above-window", lambda: ksampler(stride=128), "stride", "400"),
    ("ksampler-steps-zero", lambda: ksampler(steps=0), "steps", "400"),
    ("ksampler-4M-views", lambda: ksampler(16384, 16384, window=64, stride=8), "stride", "run"),
    # SyncDiffusion Sampler
    ("sampler-name-unknown", lambda: sync_sampler(sampler_name="nope"), "sampler_name", "400"),
    ("sampler-decay-nan", lambda: sync_sampler(sync_decay=NAN), "sync_decay", "400"),
    ("sampler-stride-above-window", lambda: sync_sampler(stride=128), "stride", "400"),
    ("sampler-anchor-unknown", lambda: sync_sampler(anchor="left"), "anchor", "400"),
    # LDM3D Loader / Decode / Encode / Upscale Conditioning
    ("ldm3d-loader-unknown-model", lambda: loader_case("no-such-model"), "model_name", "400"),
    ("ldm3d-loader-traversal", lambda: loader_case("../checkpoints/sdl3d_tiny_sd15.safetensors"), "model_name", "400"),
    ("ldm3d-decode-mode-unknown", lambda: ldm3d_decode(depth_6ch="lo_only"), "depth_6ch", "400"),
    ("ldm3d-decode-overlap-ge-tile", lambda: ldm3d_decode(tiled=True, tile_size=256, overlap=256), "overlap", "400"),
    ("ldm3d-decode-8192-untiled", lambda: ldm3d_decode(latent=(8192, 8192)), "samples", "run"),
    ("ldm3d-decode-sd-vae", lambda: ldm3d_decode(vae=["vae", 0]) | {"vae": sd_base()["vae"]}, "vae", "run"),
    ("ldm3d-encode-1x1", lambda: ldm3d_encode((1, 1)), "image", "run"),
    ("ldm3d-encode-size-mismatch", lambda: ldm3d_encode((16, 16), (8, 8)), "depth", "run"),
    ("upscale-width-not-multiple-of-8", lambda: upscale(width=100), "width", "400"),
    ("upscale-width-below-min", lambda: upscale(width=10), "width", "400"),
    ("upscale-noise-level-above-model-max", lambda: upscale(noise_level=400), "noise_level", "run"),
    ("upscale-8192x8192", lambda: upscale(width=8192, height=8192), "width", "run"),
    # VAE Decode (360 / Tiled), VAE Encode (Tiled), Model Patch, Coherence (issues 9 and 15)
    ("vae360-tile-below-min", lambda: vae360(tile_size=-64), "tile_size", "400"),
    ("vae-encode-tiled-overlap-below-min", lambda: vae_encode_tiled(overlap=-8), "overlap", "400"),
    ("model-patch-window-below-min", lambda: model_patch(window=8, stride=8), "window", "400"),
    ("coherence-crop-below-min", lambda: coherence(crop_size=8), "crop_size", "400"),
]


def vae360(**bad):
    g = sd_base()
    g["t"] = {"class_type": "SDL3D_VAEDecode360", "inputs": {"samples": ["lat", 0], "vae": ["vae", 0],
                                                             "circular": True, "tile_size": 0, "overlap": 64, **bad}}
    g["out"] = preview(["t", 0])
    return g


def vae_encode_tiled(**bad):
    g = sd_base()
    g["img"] = image(64, 64)
    g["t"] = {"class_type": "SDL3D_VAEEncodeTiled", "inputs": {"pixels": ["img", 0], "vae": ["vae", 0],
                                                               "circular": True, "tile_size": 0, "overlap": 64, **bad}}
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["t", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def model_patch(**bad):
    g = sd_base()
    g["t"] = {"class_type": "SDL3D_SyncDiffusionModelPatch",
              "inputs": {"model": ["ck", 0], "window": 64, "stride": 32, "circular": False, "view_batch_size": 0,
                         **bad}}
    g["ks"] = {"class_type": "KSampler", "inputs": {"model": ["t", 0], "positive": ["pos", 0], "negative": ["neg", 0],
                                                    "latent_image": ["lat", 0], "seed": 0, "steps": 1, "cfg": 7.5,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    g["dec"] = {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["vae", 0]}}
    g["out"] = preview(["dec", 0])
    return g


def coherence(**bad):
    return {"img": image(64, 32),
            "t": {"class_type": "SDL3D_SyncDiffusionCoherence", "inputs": {"image": ["img", 0], "crop_size": 32,
                                                                          **bad}},
            "out": {"class_type": "PreviewAny", "inputs": {"source": ["t", 2]}}}
