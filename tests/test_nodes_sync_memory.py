"""SyncDiffusion at real sizes, on real ComfyUI objects: batch plans, checkpointed gradients, the fast path.

Oracles: the same job run one view at a time without checkpointing (the plain loop), and, for the fast path, the
exact path with ComfyUI's stock TAESD VAE connected by hand.
"""

from __future__ import annotations

import os

import pytest
import torch
from model_fixtures import empty_latent, rel_err, sync_ksampler

from comfy_harness import run_node, stock_node

SYNC = dict(sync_weight=800.0, sync_steps=2, steps=3)


def recording_model(model, calls):
    """A clone of `model` whose UNet calls record (rows, grad enabled); the user's model stays untouched."""
    patched = model.clone()

    def wrapper(apply_model, args):
        calls.append((args["input"].shape[0], torch.is_grad_enabled()))
        return apply_model(args["input"], args["timestep"], **args["c"])

    patched.set_model_unet_function_wrapper(wrapper)
    return patched


def run_sampler(pack, sd, latent, vae, lpips, **settings):
    """The sampler object through comfy.sample.sample_custom (for settings the nodes do not expose)."""
    import comfy.sample
    import comfy.samplers

    nodes = pack.nodes.sync.ksampler_nodes
    base = nodes.sync_settings("test", 64, 32, SYNC["sync_weight"], 0.95, 1, SYNC["sync_steps"], "middle", False, 0)
    settings = type(base)(**{**base.__dict__, **settings})
    sampler = nodes.SyncDiffusionSampler("euler", settings, vae, lpips.model, lpips.resolution)
    model = sd["model"]
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", SYNC["steps"])
    noise = comfy.sample.prepare_noise(latent["samples"], 3)
    with torch.inference_mode():
        return comfy.sample.sample_custom(
            model, noise, 5.0, sampler, sigmas, sd["positive"], sd["negative"], latent["samples"], seed=3
        )


def test_batched_auto_and_checkpointed_runs_equal_the_one_view_plain_run(pack, sd, lpips_alex, smooth_vae):
    lat = empty_latent(8, 24)  # 5 views
    plain = run_sampler(pack, sd, lat, smooth_vae, lpips_alex, view_batch_size=1, gradient_checkpointing=False)
    multi = sync_ksampler(pack, sd, lat, vae=smooth_vae, steps=3)
    assert rel_err(plain, multi) > 1e-3, "the sync must move the result far more than the tolerance"
    for overrides in (dict(view_batch_size=4), dict(view_batch_size=4, gradient_checkpointing=False)):
        got = run_sampler(pack, sd, lat, smooth_vae, lpips_alex, **overrides)
        assert rel_err(got, plain) < 1e-5, overrides
    node = sync_ksampler(pack, sd, lat, vae=smooth_vae, lpips=lpips_alex, view_batch_size=0, **SYNC)
    assert rel_err(node, plain) < 1e-5


@pytest.mark.parametrize("conditioning", ["area", "controlnet"])
def test_view_specific_conditioning_gives_the_same_sync_at_view_batch_4_as_at_1(
    pack, sd, lpips_alex, smooth_vae, controlled, conditioning
):
    if conditioning == "area":
        (boxed,) = run_node(
            stock_node("ConditioningSetArea"), conditioning=sd["positive"], width=48, height=64, x=80, y=0, strength=1.0
        )
        (positive,) = run_node(stock_node("ConditioningCombine"), conditioning_1=sd["positive"], conditioning_2=boxed)
        job = {**sd, "positive": positive}
    else:
        job = {**sd, "positive": controlled[0], "negative": controlled[1]}
    lat = empty_latent(8, 24)
    one = sync_ksampler(pack, job, lat, vae=smooth_vae, lpips=lpips_alex, view_batch_size=1, **SYNC)
    four = sync_ksampler(pack, job, lat, vae=smooth_vae, lpips=lpips_alex, view_batch_size=4, **SYNC)
    unsynced = sync_ksampler(pack, job, lat, vae=smooth_vae, view_batch_size=1, steps=3)
    assert rel_err(one, unsynced) > 1e-3
    assert rel_err(four, one) < 1e-5


def test_the_planner_sets_the_batch_sizes_the_model_sees(pack, sd, lpips_alex, smooth_vae):
    lat = empty_latent(8, 24)  # 5 views: 4 non-anchor views in the gradient pass
    runs = {}
    for name, overrides in {
        "auto": dict(view_batch_size=0),
        "one": dict(view_batch_size=1),
        "tiny_budget": dict(view_batch_size=0, memory_budget_gb=1e-6),
    }.items():
        calls = []
        sync_ksampler(
            pack,
            {**sd, "model": recording_model(sd["model"], calls)},
            lat,
            vae=smooth_vae,
            lpips=lpips_alex,
            **SYNC,
            **overrides,
        )
        runs[name] = ({rows for rows, grad in calls if not grad}, {rows for rows, grad in calls if grad})
    # rows = views x (cond + uncond); CPU "free memory" is the machine's RAM: auto batches all 5 views (the anchor's
    # own x0 before the gradient pass is one view: 2 rows)
    assert runs["auto"][0] == {10, 2} and runs["auto"][1] == {8}  # gradient pass: the auto cap of 4 views
    assert runs["one"][0] == {2} and runs["one"][1] == {2}
    assert runs["tiny_budget"][0] == {2} and runs["tiny_budget"][1] == {2}


def test_plan_memory_follows_the_budget_and_the_estimates(pack, sd, smooth_vae):
    memory = pack.node_module("sync.memory_plan")
    model = sd["model"].model
    device = torch.device("cpu")
    per_view = memory.gradient_cost_per_view(model, smooth_vae, 1, 4, 8, 8, True)
    denoise = memory.denoise_cost_per_view(model, 1, 4, 8, 8)
    assert per_view > denoise > 0
    assert memory.gradient_cost_per_view(model, smooth_vae, 1, 4, 8, 8, False) > per_view
    budget_gib = 2.5 * per_view / memory.GIB
    plan = memory.plan_memory(model, smooth_vae, device, 13, 1, 4, 8, 8, 0, budget_gib, True)
    assert plan.gradient_planner(12) == 2 and not plan.auto
    room = min(13, int(2.5 * per_view // denoise))
    calls = -(-13 // room)
    assert plan.denoise_batch == -(-13 // calls)
    auto = memory.plan_memory(model, smooth_vae, device, 13, 1, 4, 8, 8, 0, 0.0, True)
    assert auto.auto and auto.gradient_planner(12) == 4 and auto.denoise_batch == 13
    fixed = memory.plan_memory(model, smooth_vae, device, 13, 1, 4, 8, 8, 3, 0.0, True)
    assert fixed.denoise_batch == 3 and fixed.gradient_planner(12) == 3
    assert "13 views" in auto.describe(13)


def test_fast_path_equals_the_exact_path_with_the_stock_taesd_vae(pack, sd, lpips_alex, smooth_vae):
    lat = empty_latent(8, 24)
    (taesd,) = run_node(stock_node("VAELoader"), vae_name="taesd")
    fast = sync_ksampler(pack, sd, lat, vae=smooth_vae, lpips=lpips_alex, sync_fast=True, **SYNC)
    by_hand = sync_ksampler(pack, sd, lat, vae=taesd, lpips=lpips_alex, **SYNC)
    exact = sync_ksampler(pack, sd, lat, vae=smooth_vae, lpips=lpips_alex, **SYNC)
    assert rel_err(fast, by_hand) < 1e-5
    assert rel_err(fast, exact) > 1e-4, "the fast path must really use another decoder"


def test_fast_path_without_taesd_names_the_file_and_folder(pack, sd, lpips_alex, monkeypatch):
    import folder_paths

    real = folder_paths.get_filename_list
    monkeypatch.setattr(folder_paths, "get_filename_list", lambda name: [] if name == "vae_approx" else real(name))
    monkeypatch.setitem(
        folder_paths.folder_names_and_paths,
        "vae_approx",
        ([os.path.join(folder_paths.models_dir, "vae_approx")], {".safetensors"}),
    )
    with pytest.raises(ValueError, match=r"input 'sync_fast'.*taesd_decoder.*vae_approx") as err:
        sync_ksampler(pack, sd, empty_latent(8, 24), lpips=lpips_alex, sync_fast=True, **SYNC)
    message = str(err.value)
    assert message.count("models/vae_approx") == 1 and folder_paths.models_dir not in message, message


def test_noise_sampler_rule(pack):
    import comfy.k_diffusion.sampling as k
    import comfy.samplers

    sampler = pack.nodes.sync.sampler
    x, sigmas = torch.zeros(1, 4, 8, 8), torch.tensor([10.0, 5.0, 1.0, 0.0])

    def chosen(name):
        function = comfy.samplers.sampler_object(name).sampler_function
        return sampler.persistent_noise_sampler(name, function, x, sigmas, 1, {})

    for name in ("dpmpp_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_2m_sde_heun"):
        assert isinstance(chosen(name), k.BrownianTreeNoiseSampler), name
    for name in ("euler_ancestral", "dpm_2_ancestral", "lcm", "er_sde", "sa_solver"):
        got = chosen(name)
        assert got is not None and not isinstance(got, k.BrownianTreeNoiseSampler), name
    for name in ("euler", "dpmpp_2m", "dpm_fast", "uni_pc", "heun"):
        assert chosen(name) is None, name
    assert (
        sampler.persistent_noise_sampler(
            "euler_ancestral", k.sample_euler_ancestral, x, sigmas, 1, {"noise_sampler": object()}
        )
        is None
    )  # the user's own is kept


def test_synced_view_latents_are_never_dropped_silently(pack, sd):
    import sys

    core_views = sys.modules["syncdiffusion_ldm3d.sync_core.views"]
    views = core_views.build_view_grid(8, 24, 8, 4)
    tiler = pack.nodes.sync.view_tiler.ViewTiler(sd["model"].model, views, (8, 24))
    with pytest.raises(RuntimeError, match="synchronised view latents would be lost"):
        with tiler.start_from([torch.zeros(1, 4, 8, 8)] * len(views), 1.0):
            pass
    with tiler.views([1, 2]):
        assert tiler._view_ids == [1, 2]
    assert tiler._view_ids is None and tiler._deviations is None


def test_interrupt_inside_the_gradient_pass_restores_every_module(pack, sd, lpips_alex, smooth_vae):
    import comfy.model_management

    calls = []
    model = sd["model"].clone()

    def interrupt_on_first_gradient_call(apply_model, args):
        if torch.is_grad_enabled():
            calls.append(1)
            comfy.model_management.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    model.set_model_unet_function_wrapper(interrupt_on_first_gradient_call)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sync_ksampler(
                pack,
                {**sd, "model": model},
                empty_latent(8, 24),
                vae=smooth_vae,
                lpips=lpips_alex,
                view_batch_size=1,
                **SYNC,
            )
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert calls, "the interrupt must have been raised inside the gradient pass"
    modules = [*sd["model"].model.modules(), *smooth_vae.first_stage_model.modules(), *lpips_alex.model.modules()]
    assert not [m for m in modules if "forward" in m.__dict__]
