"""LDM3D Decode / Encode in-process on real ComfyUI with the random-weight fixtures (tests/fixtures/ldm3d_fixtures.py).

Oracles: diffusers' own AutoencoderKL loaded from the same fixture folders (an independent implementation), and the
LDM3D formulas written out here.
"""

from __future__ import annotations

import pytest
import torch
from model_fixtures import diffusers_vae, random_latent

from comfy_harness import run_node, stock_node

# |tiled - untiled| on [0,1] pixels for tile 256 px / overlap 128 px, random-weight fixture VAE, whole-image
# GroupNorm statistics (measured: see the test's docstring)
TILED_MEAN_TOLERANCE, TILED_P99_TOLERANCE = 0.02, 0.1


@pytest.mark.parametrize("name", ["ldm3d", "ldm3d-4c"])
def test_decode_matches_diffusers_vae_and_ldm3d_formula(codec, comfy, ln, loaded, name):
    vae = loaded(name)[2]
    z = random_latent((1, 4, 4, 8), seed=3)
    samples = {"samples": z}
    image, depth, preview = run_node(codec.LDM3DDecode, samples=samples, vae=vae)
    assert torch.equal(samples["samples"], z) and list(samples) == ["samples"]
    assert image.shape == (1, 32, 64, 3) and depth.shape == (1, 32, 64) and preview.shape == (1, 32, 64, 3)
    with torch.no_grad():
        x = diffusers_vae(comfy, name).decode(z).sample  # raw decoder output, [-1, 1]-ish
    c = (x * 0.5 + 0.5).clamp(0, 1)
    assert torch.allclose(image, c[:, :3].permute(0, 2, 3, 1), atol=2e-4)
    if name == "ldm3d-4c":
        assert torch.allclose(depth, c[:, 3], atol=2e-4)
    else:
        code = 256 * torch.round(255 * c[:, 4]) + torch.round(255 * c[:, 5])
        got = torch.round(depth.double() * 65535)
        assert (got == code).float().mean() > 0.99  # a rounding boundary may flip between implementations
        assert torch.equal(got, torch.round(got))  # depth is exactly code / 65535
    assert torch.equal(preview[..., 1], depth)


@pytest.mark.parametrize("name", ["ldm3d", "ldm3d-4c"])
def test_encode_matches_diffusers_and_round_trips_shapes(codec, comfy, ln, loaded, name):
    vae = loaded(name)[2]
    g = torch.Generator().manual_seed(5)
    image, depth = torch.rand(1, 32, 48, 3, generator=g), torch.rand(1, 32, 48, generator=g)
    before = (image.clone(), depth.clone())
    (latent,) = run_node(codec.LDM3DEncode, image=image, depth=depth, vae=vae)
    assert torch.equal(image, before[0]) and torch.equal(depth, before[1])
    assert latent["samples"].shape == (1, 4, 4, 6)
    code = torch.round(depth * 65535)
    if name == "ldm3d":
        hi, lo = torch.div(code, 256, rounding_mode="floor") / 255, torch.remainder(code, 256) / 255
        pixels = torch.stack([image[..., 0], image[..., 1], image[..., 2], hi, hi, lo], 1)
    else:
        pixels = torch.cat([image.permute(0, 3, 1, 2), depth[:, None]], 1)
    with torch.no_grad():
        oracle = diffusers_vae(comfy, name).encode(pixels * 2 - 1).latent_dist.mode()
    assert torch.allclose(latent["samples"], oracle, atol=1e-3)
    image2, depth2, _ = run_node(codec.LDM3DDecode, samples=latent, vae=vae)
    assert image2.shape == image.shape and depth2.shape == depth.shape


def test_tiled_and_circular_decode(codec, ln, loaded):
    """Tiled vs untiled on the random-weight fixture VAE. The tiles share the whole image's GroupNorm statistics;
    the oracle for what that buys: the same tiles with per-tile statistics (ldm3d_core.tiling without whole_image,
    what the node did before). Larger tiles are closer; a tile covering the image is exact."""
    from ldm3d_core import tiling

    vae = loaded("ldm3d-4c")[2]
    z = random_latent((1, 4, 8, 40), seed=7)
    full = run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae)
    errors = {}
    for tile, overlap in ((128, 64), (256, 128), (320, 64)):
        tiled = run_node(
            codec.LDM3DDecode, samples={"samples": z}, vae=vae, tiled=True, tile_size=tile, overlap=overlap
        )
        diff = torch.cat([(full[0] - tiled[0]).abs().flatten(), (full[1] - tiled[1]).abs().flatten()])
        errors[tile] = (diff.mean().item(), diff.quantile(0.99).item(), diff.max().item())
        print(
            f"tile {tile} overlap {overlap}: mean {errors[tile][0]:.4f} p99 {errors[tile][1]:.4f} "
            f"max {errors[tile][2]:.4f}"
        )
    assert errors[256][0] < TILED_MEAN_TOLERANCE and errors[256][1] < TILED_P99_TOLERANCE
    assert errors[128][0] >= errors[256][0] >= errors[320][0] == 0.0
    with torch.inference_mode():
        per_tile = vae.process_output(tiling.decode_tiled(z, vae._decode_raw, 16, 8, 8)).movedim(1, -1)
    per_tile_error = (full[0] - per_tile[..., :3]).abs().mean().item()
    whole_error = (
        (
            full[0]
            - run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae, tiled=True, tile_size=128, overlap=64)[0]
        )
        .abs()
        .mean()
        .item()
    )
    print(
        f"tile 128 / overlap 64 RGB mean |error|: whole-image statistics {whole_error:.4f}, "
        f"per tile {per_tile_error:.4f}"
    )
    assert whole_error < 0.5 * per_tile_error, (whole_error, per_tile_error)
    circ = run_node(codec.LDM3DDecode, samples={"samples": z}, vae=vae, circular=True)
    circ_tiled = run_node(
        codec.LDM3DDecode, samples={"samples": z}, vae=vae, tiled=True, tile_size=256, overlap=128, circular=True
    )
    assert (circ[0] - circ_tiled[0]).abs().mean().item() < TILED_MEAN_TOLERANCE

    # yaw equivariance: rolling the latent by k columns rolls the circular decode by 8k pixels; the plain decode
    # is not equivariant at its borders (the old seam moves into the middle of the image).
    k = 20
    plain_rolled = run_node(codec.LDM3DDecode, samples={"samples": torch.roll(z, k, dims=3)}, vae=vae)
    circ_rolled = run_node(codec.LDM3DDecode, samples={"samples": torch.roll(z, k, dims=3)}, vae=vae, circular=True)
    seam = slice(8 * k - 16, 8 * k + 16)  # where the original image edges meet after the roll
    plain_err = (plain_rolled[0] - torch.roll(full[0], 8 * k, dims=2))[:, :, seam].abs().mean().item()
    circ_err = (circ_rolled[0] - torch.roll(circ[0], 8 * k, dims=2))[:, :, seam].abs().mean().item()
    print(f"seam roll error: plain {plain_err:.4f} circular {circ_err:.4f}")
    assert circ_err < 0.25 * plain_err


def test_stock_nodes_work_with_loaded_model(codec, ln, loaded):
    model, clip, vae, _ = loaded("ldm3d-4c")
    (pos,) = run_node(stock_node("CLIPTextEncode"), text="a lighthouse, 360 view", clip=clip)
    (neg,) = run_node(stock_node("CLIPTextEncode"), text="", clip=clip)
    (empty,) = run_node(stock_node("EmptyLatentImage"), width=64, height=32, batch_size=1)
    (latent,) = run_node(
        stock_node("KSampler"),
        model=model,
        seed=1,
        steps=2,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        positive=pos,
        negative=neg,
        latent_image=empty,
        denoise=1.0,
    )
    assert latent["samples"].shape == (1, 4, 4, 8) and torch.isfinite(latent["samples"]).all()
    image, depth, _ = run_node(codec.LDM3DDecode, samples=latent, vae=vae)
    assert image.shape == (1, 32, 64, 3) and depth.shape == (1, 32, 64)
    (rgb,) = run_node(stock_node("VAEDecode"), samples=latent, vae=vae)  # stock decode: RGB part
    assert torch.allclose(rgb, image, atol=1e-5)
    with pytest.raises(ValueError, match="LDM3D Encode"):
        run_node(stock_node("VAEEncode"), pixels=image, vae=vae)
    (rgb_tiled,) = run_node(
        stock_node("VAEDecodeTiled"),
        samples=latent,
        vae=vae,
        tile_size=64,
        overlap=32,
        temporal_size=64,
        temporal_overlap=8,
    )
    assert rgb_tiled.shape == (1, 32, 64, 3)


def test_bad_inputs_raise_clear_errors(codec, ln, loaded):
    vae = loaded("ldm3d-4c")[2]
    ckpt = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name="sdl3d_tiny_sd15.safetensors")
    z = {"samples": torch.zeros(1, 4, 4, 4)}
    with pytest.raises(ValueError, match=r"LDM3D Decode: input 'vae'.*not a 4- or 6-channel LDM3D VAE.*Fix:"):
        run_node(codec.LDM3DDecode, samples=z, vae=ckpt[2])
    bad = torch.zeros(1, 4, 4, 4)
    bad[0, 0, 0, 0] = float("nan")
    nan_latent = {"samples": bad}
    with pytest.raises(ValueError, match=r"LDM3D Decode: input 'samples'.*NaN/inf.*Fix:"):
        run_node(codec.LDM3DDecode, samples=nan_latent, vae=vae)
    assert torch.isnan(nan_latent["samples"][0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"LDM3D Decode: input 'overlap'"):
        run_node(codec.LDM3DDecode, samples=z, vae=vae, tiled=True, tile_size=64, overlap=64)
    image, depth = torch.rand(1, 32, 32, 3), torch.rand(1, 32, 40)
    with pytest.raises(ValueError, match=r"LDM3D Encode: input 'depth'.*differs.*Fix:"):
        run_node(codec.LDM3DEncode, image=image, depth=depth, vae=vae)
    inf_depth = torch.rand(1, 32, 32)
    inf_depth[0, 3, 3] = float("inf")
    with pytest.raises(ValueError, match=r"LDM3D Encode: input 'depth'.*NaN/inf"):
        run_node(codec.LDM3DEncode, image=image, depth=inf_depth, vae=vae)
    with pytest.raises(ValueError, match=r"LDM3D Encode: input 'vae'"):
        run_node(codec.LDM3DEncode, image=image, depth=inf_depth, vae=ckpt[2])
    with pytest.raises(ValueError, match=r"LDM3D Upscale Conditioning \(ldm3d-sr\): input 'vae'.*4-channel"):
        run_node(
            ln.LDM3DUpscaleConditioning,
            positive=[],
            negative=[],
            vae=loaded("ldm3d")[2],
            image=image,
            depth=torch.rand(1, 32, 32),
            width=64,
            height=64,
            noise_level=20,
        )
