"""VAE Decode (360 / Tiled) and VAE Encode (Tiled) on real ComfyUI VAEs (4-channel fixture VAE, 16-channel TAESD).

Oracles: the stock VAE Decode / VAE Encode nodes (untiled, not circular must be identical), the seam criterion
of issue 15 (mean |column 0 - column W-1| <= 1.5x the median interior adjacent-column difference) and the
untiled circular decode (tiled must stay within the stated error).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from comfy_harness import run_node, stock_node

CKPT = "sdl3d_tiny_sd15.safetensors"
DECODE_ID, ENCODE_ID = "SDL3D_VAEDecode360", "SDL3D_VAEEncodeTiled"
# |tiled - untiled| for 128 px tiles / 32 px overlap, circular, on [0,1] pixels (random-weight TAESD-shaped VAEs;
# measured mean 3.3e-4 / 7.7e-3, max 0.026 / 0.17 for the 4 / 16-channel fixtures): tiles only differ where the
# decoder's receptive field crosses a tile border, and the blend ramps hide most of it.
TILED_MEAN_TOLERANCE, TILED_MAX_TOLERANCE = 0.02, 0.3
# Tiled encode (256 px tiles, 64 px overlap) vs untiled, relative to the mean |latent|: the random TAESD encoders
# have a wide receptive field (measured 2.4% / 2.1% for 4 / 16 channels; 8% / 7% with 128 px tiles, 32 overlap).
ENCODE_RELATIVE_TOLERANCE = 0.1


def seam_ratio(image: torch.Tensor) -> float:
    """mean |col 0 - col W-1| / median over interior j of mean |col j - col j+1| (IMAGE [B,H,W,C])."""
    cols = image.movedim(2, 0).float()
    adjacent = (cols[1:] - cols[:-1]).abs().flatten(1).mean(1)
    return ((cols[0] - cols[-1]).abs().mean() / adjacent.median()).item()


def panorama_latent(channels: int, h: int = 16, w: int = 64, seed: int = 0) -> torch.Tensor:
    """A latent that is periodic in x like a 360 panorama's: low-frequency waves plus some texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    z = torch.zeros(1, channels, h, w)
    for c in range(channels):
        for k in range(1, 4):
            phase = torch.rand(2, generator=g) * 2 * math.pi
            z[0, c] += (
                torch.randn(1, generator=g)
                * torch.cos(2 * math.pi * k * xx / w + phase[0])
                * torch.cos(math.pi * k * yy / h + phase[1])
            )
    return z + 0.3 * torch.randn(z.shape, generator=g)


@pytest.fixture(scope="module")
def vae4(comfy):
    _model, _clip, vae = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)
    assert vae.latent_channels == 4
    return vae


@pytest.fixture(scope="module")
def vae16(comfy):
    """A random-weight 16-channel TAESD (the SD3/Flux latent space), loaded by ComfyUI's own VAE detection."""
    import importlib.util

    import comfy.sd
    import comfy.taesd.taesd

    build_py = Path(__file__).parent / "fixtures" / "build.py"
    spec = importlib.util.spec_from_file_location("sdl3d_fixture_build_vae", build_py)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    torch.manual_seed(16)
    vae = comfy.sd.VAE(sd=build.randomize(comfy.taesd.taesd.TAESD(latent_channels=16)).state_dict())
    assert vae.latent_channels == 16
    return vae


@pytest.fixture(params=["vae4", "vae16"])
def vae(request):
    return request.getfixturevalue(request.param)


def decode(pack, vae, z, **kw):
    return run_node(pack.by_id[DECODE_ID], samples={"samples": z}, vae=vae, **kw)[0]


def test_untiled_non_circular_equals_stock_vae_decode_and_encode(pack, vae):
    z = panorama_latent(vae.latent_channels)
    (stock,) = run_node(stock_node("VAEDecode"), samples={"samples": z}, vae=vae)
    ours = decode(pack, vae, z, circular=False, tile_size=0)
    assert torch.equal(ours, stock)
    # one tile as large as the image is the same single decode call
    assert torch.equal(decode(pack, vae, z, circular=False, tile_size=1024, overlap=64), stock)
    (stock_lat,) = run_node(stock_node("VAEEncode"), pixels=stock, vae=vae)
    (ours_lat,) = run_node(pack.by_id[ENCODE_ID], pixels=stock, vae=vae, circular=False, tile_size=0)
    assert torch.equal(ours_lat["samples"], stock_lat["samples"])


def test_circular_decode_is_seam_free_and_tiles_stay_close_to_untiled(pack, vae):
    z = panorama_latent(vae.latent_channels)
    (stock,) = run_node(stock_node("VAEDecode"), samples={"samples": z}, vae=vae)
    circular = decode(pack, vae, z, circular=True, tile_size=0, overlap=64)
    tiled = decode(pack, vae, z, circular=True, tile_size=128, overlap=32)
    assert circular.shape == tiled.shape == stock.shape == (1, 128, 512, 3)
    ratios = {name: seam_ratio(img) for name, img in (("stock", stock), ("circular", circular), ("tiled", tiled))}
    diff = (tiled - circular).abs()
    print(f"{vae.latent_channels}ch seam ratios {ratios}; tiled vs untiled mean {diff.mean():.2e} max {diff.max():.3f}")
    assert ratios["stock"] > 1.5, "the stock decode must fail the seam test, or the test proves nothing"
    assert ratios["circular"] <= 1.5 and ratios["tiled"] <= 1.5
    assert diff.mean() < TILED_MEAN_TOLERANCE and diff.max() < TILED_MAX_TOLERANCE
    # yaw equivariance: rolling the latent by 8 columns rolls the circular decode by 64 pixels
    rolled = decode(pack, vae, torch.roll(z, 8, dims=3), circular=True, tile_size=0, overlap=64)
    assert (rolled - torch.roll(circular, 64, dims=2)).abs().mean() < 1e-3


def test_tiled_encode_round_trips_like_the_stock_encode(pack, vae):
    z = panorama_latent(vae.latent_channels)
    image = decode(pack, vae, z, circular=True, tile_size=0)
    (stock,) = run_node(stock_node("VAEEncode"), pixels=image, vae=vae)
    (tiled,) = run_node(pack.by_id[ENCODE_ID], pixels=image, vae=vae, circular=True, tile_size=256, overlap=64)
    (circ,) = run_node(pack.by_id[ENCODE_ID], pixels=image, vae=vae, circular=True, tile_size=0, overlap=64)
    assert tiled["samples"].shape == stock["samples"].shape == z.shape
    scale = stock["samples"].abs().mean()
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the stock encoder's borders
    vs_circular = ((tiled["samples"] - circ["samples"]).abs().mean() / scale).item()
    vs_stock = ((tiled["samples"] - stock["samples"])[interior].abs().mean() / scale).item()
    print(
        f"{vae.latent_channels}ch tiled encode: relative mean error {vs_circular:.3f} vs circular untiled, "
        f"{vs_stock:.3f} vs stock (interior)"
    )
    assert vs_circular < ENCODE_RELATIVE_TOLERANCE and vs_stock < ENCODE_RELATIVE_TOLERANCE


def test_bad_inputs_are_refused_clearly(pack, vae4, vae16):
    z = panorama_latent(4)
    with pytest.raises(ValueError, match="overlap.*smaller than tile_size"):
        decode(pack, vae4, z, tile_size=64, overlap=64)
    with pytest.raises(ValueError, match=r"input 'vae' = 'VAE for 16-channel latents'.*4-channel latent in 'samples'"):
        decode(pack, vae16, z)
    with pytest.raises(ValueError, match="vae"):
        decode(pack, "not a vae", z)
