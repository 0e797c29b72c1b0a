"""What the per-view sampler cannot honour is refused with an error naming the node, the input, the value and the
fix, on real ComfyUI objects built by ComfyUI's own nodes and loaders: GLIGEN boxes, model-patch hint controls,
MultiGPU clones, flow sampling that is not plain flow."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import KSAMPLER_ID, empty_latent, sync_ksampler, sync_sampler_node

from comfy_harness import run_node, stock_node

NODE = "SyncDiffusion KSampler"


def _assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, (part, message)
    assert "Fix:" in message, message


@pytest.fixture(scope="module")
def node_label(pack):
    return pack.nodes.shared.common.node_name(pack.by_id[KSAMPLER_ID])


@pytest.fixture(scope="module")
def gligen_positive(sd, tmp_path_factory):
    """GLIGEN Textbox Apply (stock) with a random-weight GLIGEN loaded by ComfyUI's own loader."""
    import comfy.sd
    import comfy.utils

    gen = torch.Generator().manual_seed(0)
    sd_ = {
        "input_blocks.1.1.transformer_blocks.0.fuser.linear.weight": torch.randn(32, 768, generator=gen),
        "input_blocks.1.1.transformer_blocks.0.fuser.linear.bias": torch.zeros(32),
        "position_net.null_positive_feature": torch.zeros(768),
        "position_net.linears.4.weight": torch.randn(768, 512, generator=gen),
    }
    path = tmp_path_factory.mktemp("gligen") / "tiny_gligen.safetensors"
    comfy.utils.save_torch_file(sd_, str(path))
    gligen = comfy.sd.load_gligen(str(path))
    (positive,) = run_node(
        stock_node("GLIGENTextBoxApply"),
        conditioning_to=sd["positive"],
        clip=sd["clip"],
        gligen_textbox_model=gligen,
        text="a tree",
        width=64,
        height=64,
        x=0,
        y=0,
    )
    assert "gligen" in positive[0][1]
    return positive


def test_gligen_boxes_are_refused(pack, sd, gligen_positive, node_label):
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, sd, empty_latent(8, 24), positive=gligen_positive)
    _assert_names(str(err.value), node_label, "'positive'", "GLIGEN", "Conditioning (Set Area)")


def test_gligen_boxes_are_refused_on_the_sampler_node_through_the_guider(pack, sd, gligen_positive):
    (guider,) = run_node(
        stock_node("CFGGuider"), model=sd["model"], positive=gligen_positive, negative=sd["negative"], cfg=5.0
    )
    sampler = sync_sampler_node(pack, sd)
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=sd["model"], scheduler="normal", steps=2, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=1)
    with pytest.raises(ValueError) as err:
        run_node(
            stock_node("SamplerCustomAdvanced"),
            noise=noise,
            guider=guider,
            sampler=sampler,
            sigmas=sigmas,
            latent_image=empty_latent(8, 24),
        )
    node = pack.nodes.shared.common.node_name(pack.by_id["SDL3D_SyncDiffusionSampler"])
    _assert_names(str(err.value), node, "guider positive", "GLIGEN")


def test_gligen_boxes_are_refused_by_the_model_patch_under_the_stock_ksampler(pack, sd, gligen_positive):
    patch_cls = pack.by_id["SDL3D_SyncDiffusionModelPatch"]
    (patched,) = run_node(patch_cls, model=sd["model"], window=64, stride=32, circular=False, view_batch_size=1)
    with pytest.raises(ValueError) as err:
        run_node(
            stock_node("KSampler"),
            model=patched,
            positive=gligen_positive,
            negative=sd["negative"],
            latent_image=empty_latent(8, 24),
            seed=1,
            steps=1,
            cfg=5.0,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
        )
    _assert_names(str(err.value), pack.nodes.shared.common.node_name(patch_cls), "guider positive", "GLIGEN")


def _tiny_wan21_vae():
    """A random-weight Wan 2.1 VAE (the video VAE Qwen-Image control patches encode their hint with), built by
    ComfyUI's own VAE class from a state dict of ComfyUI's WanVAE at a tiny width."""
    import comfy.ldm.wan.vae
    import comfy.sd

    torch.manual_seed(0)
    net = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, temperal_downsample=[False, True, True])
    return comfy.sd.VAE(sd=net.state_dict())


def test_model_patch_hint_controls_are_refused(pack, flux, node_label):
    """DiffSynth control patch from the stock QwenImageDiffsynthControlnet node on a tiny block-wise ControlNet."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops
    import comfy_extras.nodes_model_patch as model_patch_nodes

    net = model_patch_nodes.QwenImageBlockWiseControlNet(
        num_layers=1, in_dim=64, dim=32, operations=comfy.ops.manual_cast
    )
    device = comfy.model_management.get_torch_device()
    patch = comfy.model_patcher.ModelPatcher(net, load_device=device, offload_device=device)
    image = torch.rand(1, 32, 32, 3)
    with torch.inference_mode():
        (patched,) = model_patch_nodes.QwenImageDiffsynthControlnet().diffsynth_controlnet(
            flux["model"], patch, _tiny_wan21_vae(), image, 1.0
        )
    job = {**flux, "model": patched}
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, job, {"samples": torch.zeros(1, 16, 8, 24)}, cfg=1.0, steps=2)
    _assert_names(str(err.value), node_label, "'model'", "DiffSynthCnetPatch", "Apply ControlNet")
    # the same model without the patch is accepted (the check looks at the patch, not the model)
    sync_ksampler(pack, flux, {"samples": torch.zeros(1, 16, 8, 24)}, cfg=1.0, steps=1)


def test_multigpu_clones_are_refused(pack, sd, node_label):
    """A MultiGPU clone as comfy.multigpu.create_multigpu_deepclones attaches it for a second device."""
    model = sd["model"].clone()
    if not hasattr(model, "deepclone_multigpu"):
        pytest.skip("this ComfyUI has no MultiGPU support (added after 0.3.75)")
    with torch.inference_mode():
        clone = model.deepclone_multigpu(new_load_device=model.load_device)
    clone.is_multigpu_base_clone = True
    model.set_additional_models("multigpu", [clone])
    model.match_multigpu_clones()
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, {**sd, "model": model}, empty_latent(8, 24))
    _assert_names(str(err.value), node_label, "'model'", "MultiGPU", "torch.no_grad()")


def _flow_variant(flux, kind: str):
    import comfy.model_base

    config = flux["model"].model.model_config
    if kind == "img_to_img_flow":
        model_type = getattr(comfy.model_base.ModelType, "IMG_TO_IMG_FLOW", None)
        if model_type is None:
            pytest.skip("this ComfyUI has no IMG_TO_IMG_FLOW")
        sampling = comfy.model_base.model_sampling(config, model_type)
    else:
        sampling = comfy.model_base.model_sampling(config, comfy.model_base.ModelType.FLOW)
        if not hasattr(sampling, "set_noise_scale"):
            pytest.skip("this ComfyUI has no flow noise_scale")
        sampling.set_noise_scale(8.0)
    model = flux["model"].clone()
    model.add_object_patch("model_sampling", sampling)  # as the stock ModelSampling* nodes do
    return model


@pytest.mark.parametrize("kind, shown", [("img_to_img_flow", "IMG_TO_IMG_FLOW"), ("noise_scale", "noise_scale 8")])
def test_flow_sampling_that_is_not_plain_flow_is_refused(pack, flux, node_label, kind, shown):
    model = _flow_variant(flux, kind)
    assert pack.nodes.sync.sampler.sampling_kind(model.get_model_object("model_sampling")) is None
    with pytest.raises(ValueError) as err:
        sync_ksampler(pack, {**flux, "model": model}, {"samples": torch.zeros(1, 16, 8, 24)}, cfg=1.0, steps=1)
    _assert_names(str(err.value), node_label, "'model'", shown, "plain flow")
    # the stock flow sampling of the same model is plain flow
    assert pack.nodes.sync.sampler.sampling_kind(flux["model"].get_model_object("model_sampling")) == "flow"
