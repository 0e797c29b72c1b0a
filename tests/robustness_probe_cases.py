"""The 81 inputs of issue 24 that scripts/robustness_probe.py posts (graph builders: tests/robustness_graphs.py).

The 25 cases the issue names (see docs/hardening.md) and 56 more on the same nodes and inputs: VAE Decode (360 /
Tiled) "vd-", VAE Encode (Tiled) "ve-", SyncDiffusion Model Patch "mp-", SyncDiffusion Coherence "co-" and the
SyncDiffusion KSampler / Sampler inputs added since the first hardening.
"""

from __future__ import annotations

from dataclasses import dataclass

from robustness_graphs import coherence, ksampler, model_patch, sync_sampler, vae360, vae_encode_tiled

BIG = (8192, 4096)
HIDE_VGG19 = "lpips/vgg19-dcbb9e9d.pth"


@dataclass
class Case:
    """expect (after issue 24): '400' queue-time refusal, 'refused' run-time refusal, 'progress' a long run that
    shows progress (or logs what it changed) and stops on an interrupt, 'success'. `at`: the node that fails."""

    id: str
    build: object
    input: str
    expect: str
    at: str = "t"
    log: str | None = None  # a server log line a 'progress' case must write
    shows_progress: bool = True  # False: the node reports no progress of its own (the warning is the sign)
    hide: str | None = None  # a model file hidden while the case runs
    node_type: str = ""  # the class of node "t", set when the graph is built


def _sd3_latent(g: dict) -> dict:
    g["lat"] = {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    return g


def _batch(g: dict, n: int) -> dict:
    g["lat"]["inputs"]["batch_size"] = n
    return g


K = "ksampler"
CASES = [
    # VAE Decode (360 / Tiled)
    Case("vd-untiled-8192x4096", lambda: vae360(BIG, tile_size=0), "tile_size", "progress", log="one untiled decode"),
    Case("vd-tile-8192-on-8192x4096", lambda: vae360(BIG, tile_size=8192), "tile_size", "progress", log="a tile"),
    Case("vd-tile-64-overlap-56", lambda: vae360((2048, 1024), tile_size=64, overlap=56), "overlap", "refused"),
    Case("vd-overlap-eq-tile", lambda: vae360(tile_size=1024, overlap=1024), "overlap", "400"),
    Case("vd-overlap-above-tile", lambda: vae360(tile_size=256, overlap=512), "overlap", "400"),
    Case("vd-flux-vae-on-4ch-latent", lambda: vae360(vae="taef1"), "vae", "refused"),
    Case("vd-tile-below-min", lambda: vae360(tile_size=-64), "tile_size", "400"),
    Case("vd-tile-above-max", lambda: vae360(tile_size=16384), "tile_size", "400"),
    Case("vd-overlap-above-max", lambda: vae360(tile_size=1024, overlap=8192), "overlap", "400"),
    Case("vd-overlap-negative", lambda: vae360(overlap=-8), "overlap", "400"),
    Case("vd-tile-not-a-number", lambda: vae360(tile_size="big"), "tile_size", "400"),
    Case("vd-untiled-wrap-pad-4096", lambda: vae360(tile_size=0, overlap=4096), "overlap", "success"),
    Case("vd-tile-64-overlap-0", lambda: vae360(tile_size=64, overlap=0), "overlap", "success"),
    Case("vd-tile-100", lambda: vae360(tile_size=100, overlap=8), "tile_size", "success"),
    Case("vd-16x16-latent", lambda: vae360((16, 16)), "samples", "success"),
    Case("vd-tiled-not-circular", lambda: vae360((256, 128), circular=False, tile_size=128, overlap=32), "", "success"),
    Case("vd-taef1-16ch-latent", lambda: _sd3_latent(vae360(vae="taef1")), "vae", "success"),
    Case("vd-batch-4", lambda: _batch(vae360(tile_size=64, overlap=16), 4), "samples", "success"),
    # VAE Encode (Tiled)
    Case(
        "ve-untiled-8192x4096",
        lambda: vae_encode_tiled(BIG, circular=False, tile_size=0),
        "tile_size",
        "progress",
        log="one untiled encode",
    ),
    Case(
        "ve-tile-8192-on-8192x4096",
        lambda: vae_encode_tiled(BIG, tile_size=8192),
        "tile_size",
        "progress",
        log="a tile",
    ),
    Case(
        "ve-tile-64-overlap-56", lambda: vae_encode_tiled((2048, 1024), tile_size=64, overlap=56), "overlap", "refused"
    ),
    Case("ve-overlap-eq-tile", lambda: vae_encode_tiled(tile_size=512, overlap=512), "overlap", "400"),
    Case("ve-ldm3d-vae", lambda: vae_encode_tiled(ldm3d_vae=True), "vae", "refused"),
    Case("ve-overlap-negative", lambda: vae_encode_tiled(overlap=-8), "overlap", "400"),
    Case("ve-tile-above-max", lambda: vae_encode_tiled(tile_size=16384), "tile_size", "400"),
    Case("ve-overlap-above-max", lambda: vae_encode_tiled(tile_size=1024, overlap=8192), "overlap", "400"),
    Case("ve-tile-not-a-number", lambda: vae_encode_tiled(tile_size="x"), "tile_size", "400"),
    Case("ve-image-4x4", lambda: vae_encode_tiled((4, 4)), "pixels", "refused"),
    Case("ve-image-12x12", lambda: vae_encode_tiled((12, 12)), "pixels", "success"),
    Case("ve-circular-untiled", lambda: vae_encode_tiled(), "circular", "success"),
    Case("ve-tile-64-overlap-16", lambda: vae_encode_tiled((256, 128), tile_size=64, overlap=16), "", "success"),
    Case("ve-taef1", lambda: vae_encode_tiled(vae="taef1"), "vae", "success"),
    # SyncDiffusion Model Patch (its view checks run inside the KSampler: at="ks")
    Case(
        "mp-view-batch-256-2048x1024",
        lambda: model_patch((2048, 1024), window=512, stride=64, view_batch_size=256),
        "view_batch_size",
        "progress",
        log="input 'view_batch_size' = 256",
        shows_progress=False,
    ),
    Case("mp-stride-8-30129-views", lambda: model_patch((2048, 1024), window=64, stride=8), "stride", "refused", "ks"),
    Case("mp-window-100", lambda: model_patch(window=100), "window", "400"),
    Case("mp-window-height-100", lambda: model_patch(window_height=100), "window_height", "400"),
    Case("mp-stride-above-window", lambda: model_patch(window=64, stride=128), "stride", "400"),
    Case("mp-stride-height-above", lambda: model_patch(window_height=64, stride_height=128), "stride_height", "400"),
    Case("mp-fusion-unknown", lambda: model_patch(fusion="mosaic"), "fusion", "400"),
    Case("mp-window-below-min", lambda: model_patch(window=8, stride=8), "window", "400"),
    Case("mp-window-height-8", lambda: model_patch(window_height=8, stride_height=8), "window_height", "400"),
    Case("mp-stride-12", lambda: model_patch(stride=12), "stride", "400"),
    Case("mp-view-batch-above-max", lambda: model_patch(view_batch_size=512), "view_batch_size", "400"),
    Case("mp-view-batch-negative", lambda: model_patch(view_batch_size=-1), "view_batch_size", "400"),
    Case("mp-window-above-max", lambda: model_patch(window=16384), "window", "400"),
    Case("mp-window-larger-than-image", lambda: model_patch(window=1024, stride=256), "window", "success"),
    Case("mp-fusion-spot", lambda: model_patch(fusion="spot"), "fusion", "success"),
    Case("mp-circular", lambda: model_patch(circular=True), "circular", "success"),
    Case("mp-view-batch-4", lambda: model_patch((128, 64), view_batch_size=4), "view_batch_size", "success"),
    # SyncDiffusion Coherence
    Case("co-crop-32-on-1024x512", lambda: coherence((1024, 512), crop_size=32), "crop_size", "refused"),
    Case("co-crop-32-on-8192x4096", lambda: coherence(BIG, crop_size=32), "crop_size", "refused"),
    Case("co-batch-64", lambda: coherence((1024, 512), batch=64, crop_size=512), "image", "progress"),
    Case("co-vgg19-missing", lambda: coherence(), "image", "refused", hide=HIDE_VGG19),
    Case("co-crop-below-min", lambda: coherence(crop_size=8), "crop_size", "400"),
    Case("co-crop-above-max", lambda: coherence(crop_size=16384), "crop_size", "400"),
    Case("co-crop-not-a-number", lambda: coherence(crop_size="a"), "crop_size", "400"),
    Case("co-crop-larger-than-image", lambda: coherence(crop_size=512), "image", "refused"),
    Case("co-one-crop", lambda: coherence((32, 32)), "image", "refused"),
    Case("co-square-one-style-crop", lambda: coherence((64, 64)), "image", "refused"),
    Case("co-small", lambda: coherence(), "image", "success"),
    Case("co-crop-32-on-256x128", lambda: coherence((256, 128)), "crop_size", "success"),
    Case("co-batch-4-small", lambda: coherence(batch=4), "image", "success"),
    # SyncDiffusion KSampler / Sampler: the inputs added since the first hardening
    Case(K + "-window-height-8", lambda: ksampler(window_height=8, stride_height=8), "window_height", "400"),
    Case(
        K + "-budget-4096-1921-views",
        lambda: ksampler(7680, 1536, window=512, stride=64, view_batch_size=0, memory_budget_gb=4096.0),
        "memory_budget_gb",
        "progress",
        log="input 'memory_budget_gb' = 4096.0",
        shows_progress=False,
    ),
    Case(K + "-window-height-100", lambda: ksampler(window_height=100), "window_height", "400"),
    Case(K + "-stride-height-above", lambda: ksampler(window_height=64, stride_height=128), "stride_height", "400"),
    Case(K + "-fusion-unknown", lambda: ksampler(fusion="mosaic"), "fusion", "400"),
    Case(K + "-window-height-above-max", lambda: ksampler(window_height=16384), "window_height", "400"),
    Case(K + "-stride-height-negative", lambda: ksampler(stride_height=-8), "stride_height", "400"),
    Case(K + "-stride-height-12", lambda: ksampler(stride_height=12), "stride_height", "400"),
    Case(K + "-budget-nan", lambda: ksampler(memory_budget_gb=float("nan")), "memory_budget_gb", "400"),
    Case(K + "-budget-negative", lambda: ksampler(memory_budget_gb=-1.0), "memory_budget_gb", "400"),
    Case(K + "-budget-above-max", lambda: ksampler(memory_budget_gb=8192.0), "memory_budget_gb", "400"),
    Case(K + "-window-height-64", lambda: ksampler(window_height=64), "window_height", "success"),
    Case(K + "-fusion-gaussian", lambda: ksampler(fusion="gaussian"), "fusion", "success"),
    Case(K + "-stride-height-16", lambda: ksampler(stride_height=16), "stride_height", "success"),
    Case(K + "-view-batch-256-one-view", lambda: ksampler(view_batch_size=256), "view_batch_size", "success"),
    Case("sampler-window-height-100", lambda: sync_sampler(window_height=100), "window_height", "400"),
    Case("sampler-fusion-unknown", lambda: sync_sampler(fusion="mosaic"), "fusion", "400"),
    Case(
        "sampler-stride-height-above", lambda: sync_sampler(window_height=64, stride_height=128), "stride_height", "400"
    ),
    Case("sampler-budget-4096", lambda: sync_sampler(memory_budget_gb=4096.0), "memory_budget_gb", "success"),
]
