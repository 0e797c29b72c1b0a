"""SyncDiffusion on flow-matching models, continued: per-view conditioning (Flux RoPE positions, guidance and
pooled vectors, SD3 pooled outputs, area conditioning, ControlNet hints), both nodes with sync on, the latent
channel check, the fast decode path, checkpointed blocks and fp8 weights. Fixtures: tests/test_nodes_sync_flow.py.
"""

from __future__ import annotations

import pytest
import torch
from model_fixtures import GUIDANCE, SD3, rel_err
from test_nodes_sync_flow import empty16, flow_sigmas, recording, run_sync, stock

from comfy_harness import run_node, stock_node

# ---------------------------------------------------------------------------------------------- per-view conditioning


def test_each_flux_view_gets_window_rope_positions_guidance_and_pooled_vector(pack, flux, lpips_alex):
    """Every model call, denoising and gradient pass alike, sees view-sized images with the RoPE image positions of
    a stand-alone window-sized image (recorded at Flux's positional embedder), the FluxGuidance value and the
    pooled vector of the prompt."""
    dm = flux["model"].model.diffusion_model
    ids = []
    hook = dm.pe_embedder.register_forward_pre_hook(lambda module, args: ids.append(args[0].detach().clone()))
    try:
        calls = []
        stock({**flux, "model": recording(flux["model"], calls)}, empty16(8, 8), steps=1)
        reference_ids = ids[-1][0]
        ids.clear()
        calls.clear()
        run_sync(
            pack,
            {**flux, "model": recording(flux["model"], calls)},
            empty16(8, 16),
            window=64,
            stride=32,
            steps=2,
            sync_weight=200.0,
            sync_steps=1,
            lpips=lpips_alex,
        )
    finally:
        hook.remove()
    assert any(c["grad"] for c in calls) and any(not c["grad"] for c in calls)
    assert len(ids) >= len(calls)
    for recorded in ids:
        assert all(torch.equal(row, reference_ids) for row in recorded), "RoPE ids of a window-sized image"
    pooled = flux["positive"][0][1]["pooled_output"]
    for c in calls:
        rows = c["x"].shape[0]
        assert c["x"].shape[1:] == (16, 8, 8), "each view is an independent window-sized image"
        assert torch.equal(c["c"]["guidance"], torch.full((rows,), GUIDANCE))
        assert torch.equal(c["c"]["y"], pooled.expand(rows, -1))


def test_each_sd3_view_gets_the_pooled_output_of_its_prompt(pack, sd3, lpips_alex):
    calls = []
    run_sync(
        pack,
        {**sd3, "model": recording(sd3["model"], calls)},
        empty16(8, 16),
        window=64,
        stride=32,
        steps=2,
        sync_weight=200.0,
        sync_steps=1,
        lpips=lpips_alex,
        view_batch_size=2,
    )
    pos, neg = sd3["positive"][0][1]["pooled_output"], sd3["negative"][0][1]["pooled_output"]
    assert any(c["grad"] for c in calls)
    for c in calls:
        rows = c["x"].shape[0]
        assert rows % 2 == 0 and c["x"].shape[1:] == (16, 8, 8)
        y = c["c"]["y"]
        assert {tuple(r.tolist()) for r in y} == {tuple(pos[0].tolist()), tuple(neg[0].tolist())}
        assert sum(torch.equal(r, pos[0]) for r in y) == rows // 2


def test_area_conditioning_is_cropped_per_view_on_a_flow_model(pack, sd3, lpips_alex):
    (boxed,) = run_node(
        stock_node("ConditioningSetArea"), conditioning=sd3["positive"], width=48, height=64, x=80, y=0, strength=1.0
    )
    (positive,) = run_node(stock_node("ConditioningCombine"), conditioning_1=sd3["positive"], conditioning_2=boxed)
    job, lat, sync = {**sd3, "positive": positive}, empty16(8, 16), dict(steps=2, sync_weight=400.0, sync_steps=1)
    one = run_sync(pack, job, lat, view_batch_size=1, lpips=lpips_alex, **sync)
    four = run_sync(pack, job, lat, view_batch_size=4, lpips=lpips_alex, **sync)
    plain = run_sync(pack, sd3, lat, view_batch_size=1, lpips=lpips_alex, **sync)
    assert rel_err(four, one) < 2e-4 and rel_err(one, plain) > 1e-2  # batched MMDiT attention: float noise only


# ---------------------------------------------------------------------------------------------- nodes, decoder, memory


def test_flux_runs_through_both_syncdiffusion_nodes_with_sync_on(pack, flux, lpips_alex):
    lat = empty16(8, 16)
    synced = run_sync(pack, flux, lat, steps=2, sync_weight=400.0, sync_steps=1, lpips=lpips_alex)
    unsynced = run_sync(pack, flux, lat, steps=2)
    assert torch.isfinite(synced).all() and rel_err(synced, unsynced) > 1e-3
    (sampler,) = run_node(
        pack.by_id["SDL3D_SyncDiffusionSampler"],
        vae=flux["vae"],
        window=64,
        stride=32,
        sync_weight=400.0,
        sync_decay=0.95,
        sync_freq=1,
        sync_steps=1,
        anchor="middle",
        circular=True,
        view_batch_size=0,
        sampler_name="euler",
        lpips=lpips_alex,
    )
    (guider,) = run_node(stock_node("BasicGuider"), model=flux["model"], conditioning=flux["positive"])
    (sigmas,) = run_node(stock_node("BasicScheduler"), model=flux["model"], scheduler="simple", steps=2, denoise=1.0)
    (noise,) = run_node(stock_node("RandomNoise"), noise_seed=7)
    out, _ = run_node(
        stock_node("SamplerCustomAdvanced"),
        noise=noise,
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image=lat,
    )
    assert out["samples"].shape == (1, 16, 8, 16) and torch.isfinite(out["samples"]).all()


def test_a_vae_with_other_latent_channels_is_refused_naming_node_input_value_and_fix(pack, sd3, comfy):
    (sd_vae,) = run_node(stock_node("VAELoader"), vae_name="taesd")
    with pytest.raises(ValueError) as err:
        run_sync(pack, {**sd3, "vae": sd_vae}, empty16(8, 16))
    message = str(err.value)
    assert "SyncDiffusion KSampler" in message and "input 'vae'" in message and "4-channel" in message
    assert "16-channel" in message and "Fix:" in message and "taesd3" in message
    (sampler,) = run_node(
        pack.by_id["SDL3D_SyncDiffusionSampler"],
        vae=sd_vae,
        window=64,
        stride=32,
        sync_weight=0.0,
        sync_decay=0.95,
        sync_freq=1,
        sync_steps=1,
        anchor="middle",
        circular=False,
        view_batch_size=0,
        sampler_name="euler",
    )
    with pytest.raises(ValueError, match="SyncDiffusion Sampler.*input 'vae'"):
        run_node(
            stock_node("SamplerCustom"),
            model=sd3["model"],
            add_noise=True,
            noise_seed=1,
            cfg=4.0,
            positive=sd3["positive"],
            negative=sd3["negative"],
            sampler=sampler,
            sigmas=flow_sigmas(sd3, 2),
            latent_image=empty16(8, 16),
        )


def test_fast_path_decodes_with_taesd3_and_equals_the_exact_path_with_stock_taesd3(pack, sd3, lpips_alex):
    lat, sync = empty16(8, 16), dict(steps=2, sync_weight=400.0, sync_steps=1)
    (taesd3,) = run_node(stock_node("VAELoader"), vae_name="taesd3")
    fast = run_sync(pack, sd3, lat, lpips=lpips_alex, sync_fast=True, **sync)
    by_hand = run_sync(pack, {**sd3, "vae": taesd3}, lat, lpips=lpips_alex, **sync)
    exact = run_sync(pack, sd3, lat, lpips=lpips_alex, **sync)
    assert rel_err(fast, by_hand) < 1e-5 and rel_err(fast, exact) > 1e-4


def test_checkpointed_blocks_are_comfyuis_flux_and_mmdit_blocks_and_give_the_same_result(pack, flux, sd3, lpips_alex):
    import comfy.ldm.flux.layers
    import comfy.ldm.modules.diffusionmodules.mmdit

    memory = pack.node_module("sync.memory_plan")
    for name in ("DoubleStreamBlock", "SingleStreamBlock"):
        assert name in memory.CHECKPOINT_BLOCKS and hasattr(comfy.ldm.flux.layers, name)
    assert "JointBlock" in memory.CHECKPOINT_BLOCKS and hasattr(comfy.ldm.modules.diffusionmodules.mmdit, "JointBlock")
    flux_blocks = memory.checkpoint_targets(flux["model"].model.diffusion_model)
    assert [type(b).__name__ for b in flux_blocks] == ["DoubleStreamBlock"]
    sd3_blocks = memory.checkpoint_targets(sd3["model"].model.diffusion_model, sd3["vae"].first_stage_model)
    assert [type(b).__name__ for b in sd3_blocks].count("JointBlock") == 2
    from test_nodes_sync_memory import run_sampler

    lat = empty16(8, 16)
    job = {**sd3, "model": sd3["model"]}
    plain = run_sampler(pack, job, lat, sd3["vae"], lpips_alex, view_batch_size=1, gradient_checkpointing=False)
    checkpointed = run_sampler(pack, job, lat, sd3["vae"], lpips_alex, view_batch_size=1)
    assert rel_err(checkpointed, plain) < 1e-5


def test_fp8_stored_weights_run_the_gradient_pass(pack, sd3, lpips_alex):
    """UNETLoader weight_dtype fp8_e4m3fn (what a 24 GB card needs for Flux): ComfyUI's manual-cast layers upcast
    each weight per call; the sync gradient flows through them."""
    (fp8,) = run_node(stock_node("UNETLoader"), unet_name=SD3, weight_dtype="fp8_e4m3fn")
    assert fp8.model.diffusion_model.x_embedder.proj.weight.dtype == torch.float8_e4m3fn
    job, lat = {**sd3, "model": fp8}, empty16(8, 16)
    synced = run_sync(pack, job, lat, steps=2, sync_weight=400.0, sync_steps=1, lpips=lpips_alex)
    unsynced = run_sync(pack, job, lat, steps=2)
    assert torch.isfinite(synced).all() and rel_err(synced, unsynced) > 1e-3


def test_controlnet_hints_are_cropped_per_view_under_flow_sampling(pack, comfy, lpips_alex):
    """ControlNet under CONST sampling (the SD fixture + its ControlNet, patched by the stock ModelSamplingSD3 node:
    no tiny Flux/SD3 ControlNet fixture exists): one full view equals the stock KSampler, a synced panorama runs."""
    from model_fixtures import CKPT, CONTROLNET, empty_latent

    model, clip, vae = run_node(stock_node("CheckpointLoaderSimple"), ckpt_name=CKPT)
    (flow_model,) = run_node(stock_node("ModelSamplingSD3"), model=model, shift=3.0)
    (positive,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="a wide mountain landscape")
    (negative,) = run_node(stock_node("CLIPTextEncode"), clip=clip, text="")
    (control,) = run_node(stock_node("ControlNetLoader"), control_net_name=CONTROLNET)
    ramp = torch.linspace(0, 1, 128)
    hint = torch.stack(
        [ramp.expand(64, 128), ramp.flip(0).expand(64, 128), (ramp * 7 % 1).expand(64, 128)], dim=-1
    ).unsqueeze(0)
    pos_c, neg_c = run_node(
        stock_node("ControlNetApplyAdvanced"),
        positive=positive,
        negative=negative,
        control_net=control,
        image=hint[:, :, :64],
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    job = dict(model=flow_model, positive=pos_c, negative=neg_c, vae=vae, cfg=5.0, family="sd15-flow")
    square = empty_latent(8, 8)
    ours = run_sync(pack, job, square, window=64, stride=64)
    theirs = stock(job, square, scheduler="normal")
    without = stock({**job, "positive": positive, "negative": negative}, square, scheduler="normal")
    assert torch.allclose(ours, theirs, atol=1e-6) and not torch.allclose(theirs, without, atol=1e-3)
    pos_w, neg_w = run_node(
        stock_node("ControlNetApplyAdvanced"),
        positive=positive,
        negative=negative,
        control_net=control,
        image=hint,
        strength=1.0,
        start_percent=0.0,
        end_percent=1.0,
    )
    wide = run_sync(
        pack,
        {**job, "positive": pos_w, "negative": neg_w},
        empty_latent(8, 16),
        steps=2,
        sync_weight=200.0,
        sync_steps=1,
        lpips=lpips_alex,
    )
    assert wide.shape == (1, 4, 8, 16) and torch.isfinite(wide).all()
