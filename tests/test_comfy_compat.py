"""Contract tests for nodes/shared/comfy_compat.py: every ComfyUI internal the pack touches, checked on the installed
ComfyUI. A failure message names the ComfyUI change to look for and the compat function to update."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import empty_latent

from comfy_harness import prepare_class_clone, run_node, stock_node


@pytest.fixture(scope="module")
def compat(pack):
    return pack.node_module("shared.comfy_compat")


def test_ksampler_keeps_its_function_and_options(compat, comfy):
    import comfy.k_diffusion.sampling as k
    import comfy.samplers

    sampler = comfy.samplers.ksampler("euler_ancestral", {"eta": 0.3}, {"random": True})
    function, extra, inpaint = compat.ksampler_parts(sampler)
    assert function is k.sample_euler_ancestral and extra == {"eta": 0.3} and inpaint == {"random": True}, (
        "comfy.samplers.KSAMPLER no longer keeps sampler_function / extra_options / inpaint_options: update "
        "comfy_compat.ksampler_parts"
    )
    assert compat.is_ksampler(sampler) and compat.is_ksampler(comfy.samplers.sampler_object("dpmpp_2m"))


def test_guider_exposes_inner_model_loaded_models_and_conds_while_sampling(compat, sd):
    """A SAMPLER sees the guider as `model_wrap` (what SyncDiffusion's sampler reads) during SamplerCustomAdvanced."""
    import comfy.model_base
    import comfy.samplers

    seen = {}

    class Probe(comfy.samplers.KSAMPLER):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, *args, **kwargs):
            seen["inner"] = compat.guider_inner_model(model_wrap)
            seen["loaded"] = compat.guider_loaded_models(model_wrap)
            seen["conds"] = compat.guider_conds(model_wrap)
            return super().sample(model_wrap, sigmas, extra_args, callback, noise, *args, **kwargs)

    import comfy.k_diffusion.sampling as k

    (guider,) = run_node(
        stock_node("CFGGuider"), model=sd["model"], positive=sd["positive"], negative=sd["negative"], cfg=5.0
    )
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=sd["model"], scheduler="normal", steps=1, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=1)
    run_node(
        stock_node("SamplerCustomAdvanced"),
        noise=noise,
        guider=guider,
        sampler=Probe(k.sample_euler),
        sigmas=sigmas,
        latent_image=empty_latent(8, 8),
    )
    assert isinstance(seen["inner"], comfy.model_base.BaseModel), (
        "CFGGuider no longer sets `inner_model` (the BaseModel) before calling the sampler: update "
        "comfy_compat.guider_inner_model"
    )
    assert isinstance(seen["loaded"], list), "CFGGuider.loaded_models changed: update comfy_compat.guider_loaded_models"
    assert set(seen["conds"]) >= {"positive", "negative"} and all(
        isinstance(c, dict) for c in seen["conds"]["positive"]
    ), "CFGGuider.conds (processed cond dicts by name) changed: update comfy_compat.guider_conds"


def test_brownian_tree_samplers_are_read_from_comfyui(compat, comfy):
    import comfy.samplers

    found = compat.brownian_tree_samplers()
    assert {"dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde", "dpmpp_2m_sde_gpu"} <= found, (
        f"{sorted(found)}: ComfyUI's k_diffusion sampler functions no longer build BrownianTreeNoiseSampler by "
        "name: update comfy_compat.brownian_tree_samplers"
    )
    assert not found & {"euler", "euler_ancestral", "er_sde", "sa_solver", "lcm"}, sorted(found)
    assert found <= set(comfy.samplers.KSAMPLER_NAMES), sorted(found - set(comfy.samplers.KSAMPLER_NAMES))


def test_differentiable_paths_sets_comfyuis_training_flag_and_restores_it(compat, comfy):
    import comfy.model_management as mm

    before = getattr(mm, "in_training", None)
    with compat.differentiable_paths():
        inside = getattr(mm, "in_training", None)
    assert getattr(mm, "in_training", None) == before
    if before is None:
        pytest.skip("this ComfyUI has no comfy.model_management.in_training (0.3.75: nothing to switch)")
    assert inside is True


def test_flux_rope_is_differentiable_inside_differentiable_paths(compat, comfy):
    """ComfyUI 0.33 routes Flux RoPE through comfy_kitchen custom ops (no autograd formula) unless in_training."""
    from comfy.ldm.flux import math as flux_math

    x = torch.randn(1, 2, 4, 8, requires_grad=True)
    freqs = flux_math.rope(torch.arange(4.0).unsqueeze(0), 8, 10000).unsqueeze(1)
    with compat.differentiable_paths():
        q, k = flux_math.apply_rope(x * 1.0, x * 2.0, freqs)
        (grad,) = torch.autograd.grad((q.square().sum() + k.sum()), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0, (
        "Flux RoPE is not differentiable inside comfy_compat.differentiable_paths(): ComfyUI changed how it picks its "
        "differentiable path (comfy.model_management.in_training)"
    )


def test_flow_variant_recognises_comfyuis_plain_flow_and_its_variants(compat, comfy):
    import comfy.model_base
    import comfy.supported_models

    config = comfy.supported_models.Flux({"image_model": "flux"})
    assert compat.flow_variant(comfy.model_base.model_sampling(config, comfy.model_base.ModelType.FLUX)) is None
    assert compat.flow_variant(comfy.model_base.model_sampling(config, comfy.model_base.ModelType.FLOW)) is None
    img_to_img = getattr(comfy.model_base.ModelType, "IMG_TO_IMG_FLOW", None)
    if img_to_img is not None:
        assert "IMG_TO_IMG_FLOW" in compat.flow_variant(comfy.model_base.model_sampling(config, img_to_img))


def test_png_metadata_is_comfyuis(compat, comfy):
    from comfy_api.latest import io

    class Probe(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            return io.Schema(node_id="SDL3D_CompatProbe", inputs=[], outputs=[], hidden=[io.Hidden.prompt])

    clone = prepare_class_clone(Probe, {io.Hidden.prompt: {"1": {"class_type": "x"}}})
    info = compat.png_metadata(clone)
    assert info is not None and any(chunk[1].startswith(b"prompt\0") for chunk in info.chunks), (
        "comfy_api.latest.ui.ImageSaveHelper._create_png_metadata changed: update comfy_compat.png_metadata"
    )


def test_checkpointed_block_classes_exist_where_the_pack_looks_for_them(compat, pack, comfy):
    missing = [name for name, cls in compat.checkpoint_block_classes().items() if cls is None]
    assert not missing, (
        f"ComfyUI moved or renamed the block classes {missing}: the gradient pass would stop checkpointing them "
        "(more memory); update comfy_compat.CHECKPOINT_BLOCK_PATHS"
    )
    assert set(pack.node_module("sync.memory_plan").CHECKPOINT_BLOCKS) == set(compat.checkpoint_block_classes())


def test_vae_out_of_memory_fallback_is_the_method_ldm3d_overrides(compat, comfy):
    """LDM3DVAE overrides comfy.sd.VAE's private decode_tiled_ (tests/test_ldm3d_comfy_contract.py checks its
    signature and that decode calls it); the name is kept here."""
    import inspect

    import comfy.sd

    assert compat.VAE_OOM_FALLBACK == "decode_tiled_"
    assert compat.VAE_OOM_FALLBACK in inspect.getsource(comfy.sd.VAE.decode), (
        "comfy.sd.VAE.decode no longer falls back to decode_tiled_: LDM3DVAE's override would be dead; see "
        "nodes/ldm3d/ldm3d_vae.py"
    )


def test_calc_cond_batch_hook_receives_what_the_view_tiler_reads(compat, sd):
    """ComfyUI calls model_options[CALC_COND_BATCH_HOOK] in place of calc_cond_batch and uses what it returns."""
    import comfy.samplers

    seen = []

    def hook(args):
        seen.append(set(args))
        out = comfy.samplers.calc_cond_batch(
            args["model"], args["conds"], args["input"], args["sigma"], args["model_options"]
        )
        return [o * 0.0 if o is not None else None for o in out]  # zeros: the result must come from the hook

    model = sd["model"].clone()
    model.model_options[compat.CALC_COND_BATCH_HOOK] = hook
    (out,) = run_node(
        stock_node("KSampler"),
        model=model,
        positive=sd["positive"],
        negative=sd["negative"],
        latent_image=empty_latent(8, 8),
        seed=1,
        steps=1,
        cfg=5.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    assert seen and seen[0] >= {"conds", "input", "sigma", "model", "model_options"}, (
        f"{seen[:1]}: ComfyUI changed the {compat.CALC_COND_BATCH_HOOK} hook the view tiler is installed as"
    )
    assert out["samples"].abs().max() < 1e-4, "ComfyUI no longer uses the hook's result (zero predictions)"
