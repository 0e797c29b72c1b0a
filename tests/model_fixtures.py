"""Model fixtures and sampling helpers shared by the sampler test modules (a pytest plugin: tests/conftest.py
lists it in pytest_plugins).

The tiny random-weight checkpoints (tests/fixtures/build.py) loaded by ComfyUI's stock loaders, prompts encoded by the
stock CLIP Text Encode, LPIPS from the pack's loader.
"""

from __future__ import annotations

import pytest
import torch

from comfy_harness import run_node, stock_node

CKPT = "sdl3d_tiny_sd15.safetensors"
CONTROLNET = "sdl3d_tiny_controlnet.safetensors"
FLUX = "sdl3d_tiny_flux.safetensors"
SD3 = "sdl3d_tiny_sd3.safetensors"
FLOW_VAE = "sdl3d_tiny_flow_vae.safetensors"
GUIDANCE = 3.5
KSAMPLER_ID = "SDL3D_SyncDiffusionKSampler"


def _random_cond(gen, tokens, width, pooled):
    return [[torch.randn(1, tokens, width, generator=gen), {"pooled_output": torch.randn(1, pooled, generator=gen)}]]


@pytest.fixture(scope="module")
def sd(comfy):
    model, clip, vae = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)
    (positive,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="a wide mountain landscape")
    (negative,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="")
    return dict(model=model, clip=clip, vae=vae, positive=positive, negative=negative)


@pytest.fixture(scope="module")
def lpips_alex(pack, comfy):
    return pack.nodes.sync.ksampler_nodes.load_lpips("test", "alex")


@pytest.fixture(scope="module")
def plain(comfy):
    """The fixture's raw modules loaded outside inference mode (for oracles that need autograd)."""
    import comfy.sd
    import folder_paths

    path = folder_paths.get_full_path_or_raise("checkpoints", CKPT)
    model, _clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=False)
    return dict(
        unet=model.model.diffusion_model,
        model_sampling=model.model.model_sampling,
        decoder=vae.first_stage_model,
        scale=model.model.latent_format.scale_factor,
    )


@pytest.fixture(scope="module")
def smooth_vae(pack, comfy):
    """A decoder without ReLU kinks (the LDM3D-4c AutoencoderKL fixture: SiLU + GroupNorm; its first three
    channels are RGB). The random TAESD (ReLUs, most pixels clamped) makes the LPIPS gradient jump by ~4% under a
    1e-6 input change, which would make a 1e-4 comparison meaningless; this one moves it by ~1e-5."""
    return pack.by_id["SDL3D_LDM3DLoader"].execute(model_name="ldm3d-4c").result[2]


@pytest.fixture(scope="module")
def vae16(comfy):
    return run_node(stock_node("VAELoader"), vae_name=FLOW_VAE)[0]


@pytest.fixture(scope="module")
def flux(comfy, vae16):
    """Flux dev shaped: distilled guidance through the stock FluxGuidance node, cfg 1 (no negative pass)."""
    (model,) = run_node(stock_node("UNETLoader"), unet_name=FLUX, weight_dtype="default")
    gen = torch.Generator().manual_seed(10)
    (positive,) = run_node(stock_node("FluxGuidance"), conditioning=_random_cond(gen, 4, 768, 768), guidance=GUIDANCE)
    return dict(model=model, positive=positive, negative=positive, vae=vae16, cfg=1.0, family="flux")


@pytest.fixture(scope="module")
def sd3(comfy, vae16):
    (model,) = run_node(stock_node("UNETLoader"), unet_name=SD3, weight_dtype="default")
    gen = torch.Generator().manual_seed(11)
    return dict(
        model=model,
        positive=_random_cond(gen, 4, 4096, 2048),
        negative=_random_cond(gen, 4, 4096, 2048),
        vae=vae16,
        cfg=4.0,
        family="sd3",
    )


@pytest.fixture(scope="module", params=["flux", "sd3"])
def family(request):
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def hint():
    """A 64x192 px hint whose every column is different (a horizontal ramp per channel)."""
    ramp = torch.linspace(0, 1, 192)
    return torch.stack(
        [ramp.expand(64, 192), ramp.flip(0).expand(64, 192), (ramp * 7 % 1).expand(64, 192)], dim=-1
    ).unsqueeze(0)


@pytest.fixture(scope="module")
def controlled(sd, hint):
    (control,) = run_node(stock_node("ControlNetLoader"), control_net_name=CONTROLNET)
    positive, negative = run_node(
        stock_node("ControlNetApplyAdvanced"),
        positive=sd["positive"],
        negative=sd["negative"],
        control_net=control,
        image=hint,
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    return positive, negative


# ---------------------------------------------------------------- helpers


def empty_latent(h, w, batch=1):
    return {"samples": torch.zeros(batch, 4, h, w)}


def sync_ksampler(pack, sd, lat, **overrides):
    params = dict(
        model=sd["model"],
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=lat,
        vae=sd["vae"],
        seed=3,
        steps=3,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
        window=64,
        stride=32,
        sync_weight=0.0,
        sync_decay=0.95,
        sync_freq=1,
        sync_steps=10,
        anchor="middle",
        circular=False,
        view_batch_size=1,
    )
    params.update(overrides)
    return run_node(pack.by_id[KSAMPLER_ID], **params)[0]["samples"]


def sync_sampler_node(pack, sd, lpips=None, **overrides):
    """The SyncDiffusion Sampler node's SAMPLER, with the view and sync settings sync_ksampler uses."""
    params = dict(
        vae=sd["vae"],
        window=64,
        stride=32,
        sync_weight=0.0,
        sync_decay=0.95,
        sync_freq=1,
        sync_steps=10,
        anchor="middle",
        circular=False,
        view_batch_size=1,
        sampler_name="euler",
    )
    if lpips is not None:
        params["lpips"] = lpips
    params.update(overrides)
    return run_node(pack.by_id["SDL3D_SyncDiffusionSampler"], **params)[0]


def stock_ksampler(sd, lat, seed=3, steps=3, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0):
    return run_node(
        stock_node("KSampler"),
        model=sd["model"],
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=lat,
        seed=seed,
        steps=steps,
        cfg=cfg,
        sampler_name=sampler_name,
        scheduler=scheduler,
        denoise=denoise,
    )[0]["samples"]


def cfg_eps(plain, sd, cfg):
    cond, uncond = sd["positive"][0][0].clone(), sd["negative"][0][0].clone()

    def eps_fn(z, t):
        n = z.shape[0]
        out = plain["unet"](
            torch.cat([z, z]),
            torch.full((2 * n,), float(t)),
            context=torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]),
        )
        e_u, e_c = out.chunk(2)
        return e_u + cfg * (e_c - e_u)

    return eps_fn


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------- LDM3D
@pytest.fixture(scope="module")
def ln(pack):
    return pack.node_module("ldm3d.loader_nodes")


@pytest.fixture(scope="module")
def codec(pack):
    return pack.node_module("ldm3d.codec_nodes")


@pytest.fixture(scope="module")
def loaded(ln):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run_node(ln.LDM3DLoader, model_name=name)
        return cache[name]

    return get


def diffusers_vae(comfy, name):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(comfy.models / "ldm3d" / name / "vae")).float().eval()


def random_latent(shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


GN_VAE_DDCONFIG = dict(
    double_z=True,
    z_channels=4,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=32,
    ch_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    attn_resolutions=[],
    dropout=0.0,
)


def groupnorm_vae(seed: int = 0):
    """A small SD-architecture VAE (ComfyUI's own AutoencoderKL: GroupNorm everywhere, attention in the mid blocks,
    8x downscale) with random weights, small enough for a CPU: ComfyUI's VAE built from its state dict."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(ddconfig=dict(GN_VAE_DDCONFIG), embed_dim=4)
    with torch.no_grad():  # ComfyUI's ops leave parameters uninitialised
        for name, param in sorted(model.named_parameters()):
            if param.ndim > 1:
                param.normal_(0.0, (1.0 / param[0].numel()) ** 0.5)
            else:
                param.fill_(1.0) if name.endswith("weight") else param.zero_()
    config = {"params": {"ddconfig": dict(GN_VAE_DDCONFIG), "embed_dim": 4}}
    return comfy.sd.VAE(sd=model.state_dict(), config=config)


@pytest.fixture(scope="module")
def gn_vae(comfy):
    return groupnorm_vae()
