"""The robustness suite's cases (tests/test_robustness_api.py): CASES = (id, graph builder, input at fault, expected
answer), built from tests/robustness_graphs.py; LONG_CASES = in-range inputs that run long on the CI's CPU (id,
graph builder, the node whose progress shows, a server log line that must appear): they must show progress or
say what they changed, and stop on an interrupt. docs/hardening.md lists them."""

from __future__ import annotations

import math

from robustness_graphs import (
    coherence,
    ksampler,
    ldm3d_decode,
    ldm3d_encode,
    load_depth,
    loader_case,
    lpips,
    mesh,
    model_patch,
    pack_with_image,
    save_depth,
    save_stereo,
    sd_base,
    stereo,
    stereo_pack,
    stereo_sized,
    sync_sampler,
    unpack,
    upscale,
    vae360,
    vae_encode_tiled,
)
from robustness_graphs_360 import filled_holes, hole_mask, projection, sphere_sampler

# expected: "400" = rejected at queue time; "run" = execution error of node "t" naming its node and the input;
# "run@<id>" = the error is raised while node <id> runs (the Model Patch's checks run inside the KSampler)
BIG = (8192, 4096)

NAN, INF = math.nan, math.inf
LONG_NAME = "t3/" + "\u6df1" * 100  # '深': a 300-byte file name part in UTF-8 (the OS allows 255)
LONG_PATH = "p" * 99 + "/" + ("p" * 99 + "/") * 41 + "d"  # 4,201 characters in 42 short subfolders
TAKEN = "taken_by_a_file"  # a file in output/ (planted by the suite): not usable as a subfolder
NEWLINE = "line\nbreak"


def prefix_cases(prefix: str, build) -> list[tuple]:
    """The prefixes the OS cannot take, for one save node."""
    return [
        (f"{prefix}-prefix-name-300-bytes", lambda: build(filename_prefix=LONG_NAME), "filename_prefix", "400"),
        (f"{prefix}-prefix-path-4201-chars", lambda: build(filename_prefix=LONG_PATH), "filename_prefix", "400"),
        (f"{prefix}-prefix-subfolder-is-file", lambda: build(filename_prefix=f"{TAKEN}/x"), "filename_prefix", "400"),
        (f"{prefix}-prefix-newline", lambda: build(filename_prefix=NEWLINE), "filename_prefix", "400"),
    ]


TURN = {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}
VIEW = {**TURN, "fov": 90.0, "width": 16, "height": 16}

CASES = [
    # Full sphere: the sampler and the projection nodes
    ("sphere-fov-nan", lambda: sphere_sampler(fov=NAN), "fov", "400"),
    ("sphere-sync-until-inf", lambda: sphere_sampler(sync_until=INF), "sync_until", "400"),
    ("sphere-width-not-16", lambda: sphere_sampler(width=120), "width", "400"),
    ("sphere-layout-unknown", lambda: sphere_sampler(layout="icosahedron"), "layout", "400"),
    ("sphere-sampler-unknown", lambda: sphere_sampler(sampler_name="warp_drive"), "sampler_name", "400"),
    ("to-perspective-yaw-nan", lambda: projection("SDL3D_EquirectToPerspective", **{**VIEW, "yaw": NAN}), "yaw", "400"),
    ("to-perspective-not-2to1", lambda: projection("SDL3D_EquirectToPerspective", (16, 16), **VIEW), "image", "run"),
    ("to-equirect-fov-inf", lambda: projection("SDL3D_PerspectiveToEquirect", **{**VIEW, "fov": INF}), "fov", "400"),
    ("to-cubemap-not-2to1", lambda: projection("SDL3D_EquirectToCubemap", (16, 16), face_size=8), "image", "run"),
    ("from-cubemap-not-a-strip", lambda: projection("SDL3D_CubemapToEquirect", (16, 8), width=32), "image", "run"),
    (
        "to-cubemap-interpolation-unknown",
        lambda: projection("SDL3D_EquirectToCubemap", face_size=8, mask_interpolation="cubic"),
        "mask_interpolation",
        "400",
    ),
    ("rotate-pitch-nan", lambda: projection("SDL3D_RotateEquirect", **{**TURN, "pitch": NAN}), "pitch", "400"),
    # Filled stereo holes
    ("hole-mask-ipd-nan", lambda: hole_mask(ipd_m=NAN), "ipd_m", "400"),
    ("hole-mask-grow-above-max", lambda: hole_mask(grow_px=9999), "grow_px", "400"),
    ("filled-holes-far-nan", lambda: filled_holes(far_m=NAN), "far_m", "400"),
    ("filled-holes-background-size", lambda: filled_holes(background=(32, 16)), "background", "run"),
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
    (
        "stereo-displacement-ge-radius",
        lambda: stereo(depth_mode="sphere_displace", displacement_m=7.0),
        "displacement_m",
        "400",
    ),
    ("stereo-linear-infinite-far", lambda: stereo(depth_mode="linear", far_m=0.0), "far_m", "400"),
    ("stereo-metric-scale-nan", lambda: stereo(metric_scale_m=NAN), "metric_scale_m", "400"),
    ("stereo-crack-above-max", lambda: stereo(crack_px=99), "crack_px", "400"),
    ("stereo-supersample-above-max", lambda: stereo(supersample=3), "supersample", "400"),
    ("stereo-image-not-2to1", lambda: stereo_sized(16, 16, 16, 16), "image", "run"),
    ("stereo-depth-size-mismatch", lambda: stereo_sized(16, 8, 8, 4), "depth", "run"),
    (
        "stereo-8192x4096-supersample-2",
        lambda: stereo_sized(8192, 4096, 8192, 4096) | {"t": stereo(supersample=2)["t"]},
        "image",
        "run",
    ),
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
    *prefix_cases("mesh", mesh),
    # Save Stereo 360
    ("save360-prefix-traversal", lambda: save_stereo(filename_prefix="../escape/ods"), "filename_prefix", "400"),
    ("save360-prefix-absolute", lambda: save_stereo(filename_prefix="{outside}/ods"), "filename_prefix", "400"),
    ("save360-prefix-symlink-dir", lambda: save_stereo(filename_prefix="link_out/ods"), "filename_prefix", "400"),
    ("save360-prefix-empty", lambda: save_stereo(filename_prefix=""), "filename_prefix", "400"),
    ("save360-prefix-inner-traversal", lambda: save_stereo(filename_prefix="a/../../ods"), "filename_prefix", "400"),
    ("save360-layout-unknown", lambda: save_stereo(layout="anaglyph"), "layout", "400"),
    ("save360-1x1-frame", lambda: save_stereo(1, 1), "images", "run"),
    *prefix_cases("save360", save_stereo),
    # Save Depth PNG 16-bit
    ("savedepth-prefix-traversal", lambda: save_depth(filename_prefix="../../escape"), "filename_prefix", "400"),
    ("savedepth-prefix-absolute", lambda: save_depth(filename_prefix="{outside}/d"), "filename_prefix", "400"),
    ("savedepth-prefix-symlink-dir", lambda: save_depth(filename_prefix="link_out/d"), "filename_prefix", "400"),
    ("savedepth-prefix-empty", lambda: save_depth(filename_prefix=""), "filename_prefix", "400"),
    ("savedepth-prefix-no-name", lambda: save_depth(filename_prefix="robust/"), "filename_prefix", "400"),
    *prefix_cases("savedepth", save_depth),
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
    # issue 24: cross-input rules at queue time (they failed at run time before)
    ("vae360-overlap-eq-tile", lambda: vae360(tile_size=1024, overlap=1024), "overlap", "400"),
    ("vae360-overlap-above-tile", lambda: vae360(tile_size=256, overlap=512), "overlap", "400"),
    ("vae-encode-tiled-overlap-eq-tile", lambda: vae_encode_tiled(tile_size=512, overlap=512), "overlap", "400"),
    ("model-patch-window-not-multiple-of-8", lambda: model_patch(window=100), "window", "400"),
    ("model-patch-window-height-not-multiple-of-8", lambda: model_patch(window_height=100), "window_height", "400"),
    ("model-patch-stride-above-window", lambda: model_patch(window=64, stride=128), "stride", "400"),
    (
        "model-patch-stride-height-above",
        lambda: model_patch(window_height=64, stride_height=128),
        "stride_height",
        "400",
    ),
    ("model-patch-fusion-unknown", lambda: model_patch(fusion="mosaic"), "fusion", "400"),
    ("ksampler-window-height-not-multiple-of-8", lambda: ksampler(window_height=100), "window_height", "400"),
    ("ksampler-stride-height-above", lambda: ksampler(window_height=64, stride_height=128), "stride_height", "400"),
    ("ksampler-fusion-unknown", lambda: ksampler(fusion="mosaic"), "fusion", "400"),
    ("sampler-fusion-unknown", lambda: sync_sampler(fusion="mosaic"), "fusion", "400"),
    ("model-patch-window-height-8", lambda: model_patch(window_height=8, stride_height=8), "window_height", "400"),
    ("ksampler-window-height-8", lambda: ksampler(window_height=8, stride_height=8), "window_height", "400"),
    # issue 24: too much work, refused (with the count and the limit) before anything is allocated
    ("vae360-tile-64-overlap-56", lambda: vae360((2048, 1024), tile_size=64, overlap=56), "overlap", "run"),
    (
        "vae-encode-tiled-tile-64-overlap-56",
        lambda: vae_encode_tiled((2048, 1024), tile_size=64, overlap=56),
        "overlap",
        "run",
    ),
    ("model-patch-30129-views", lambda: model_patch((2048, 1024), window=64, stride=8), "stride", "run@ks"),
    ("coherence-crop-32-on-1024x512", lambda: coherence((1024, 512), crop_size=32), "crop_size", "run"),
    ("coherence-crop-32-on-8192x4096", lambda: coherence(BIG, crop_size=32), "crop_size", "run"),
    # issue 24: messages naming the node used, the input to change and the fix
    ("vae360-flux-vae-on-4-channel-latent", lambda: vae360(vae="taef1"), "vae", "run"),
    ("vae-encode-tiled-ldm3d-vae", lambda: vae_encode_tiled(ldm3d_vae=True), "vae", "run"),
]

# (id, graph builder, node id whose progress is expected (None: the warning is the sign), server log line)
LONG_CASES = [
    ("vae360-untiled-8192x4096", lambda: vae360(BIG, tile_size=0), "t", "input 'tile_size' = 0: one untiled decode"),
    ("vae360-tile-8192-on-8192x4096", lambda: vae360(BIG, tile_size=8192), "t", "input 'tile_size' = 8192: a tile"),
    (
        "vae-encode-tiled-untiled-8192x4096",
        lambda: vae_encode_tiled(BIG, circular=False, tile_size=0),
        "t",
        "input 'tile_size' = 0: one untiled encode",
    ),
    (
        "model-patch-view-batch-256",
        lambda: model_patch((2048, 1024), window=512, stride=64, view_batch_size=256),
        None,
        "input 'view_batch_size' = 256: 225 views per call",
    ),
    (
        "ksampler-budget-4096-1921-views",
        lambda: ksampler(7680, 1536, window=512, stride=64, view_batch_size=0, memory_budget_gb=4096.0),
        None,
        "input 'memory_budget_gb' = 4096.0: is more than the memory limit",
    ),
    ("coherence-batch-64", lambda: coherence((1024, 512), batch=64, crop_size=512), "t", None),
]
