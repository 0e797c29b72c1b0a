"""The SD 360 workflows (txt2img with circular SyncDiffusion; panorama upscale with the model patch) run in-process on
the tiny SD1.5 fixture, and their VAE Decode (360 / Tiled) output passes the seam test of issue 15 (the server test
runs the same files headless)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_nodes_vae360 import seam_ratio

from comfy_harness import run_api_graph, run_node, stock_node
from workflow_overrides import shrink_workflow

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
CKPT = "sdl3d_tiny_sd15.safetensors"


@pytest.mark.parametrize(
    "name,sampler_node,decode_node", [("panorama_360_sd", "6", "7"), ("panorama_360_upscale", "8", "9")]
)
def test_360_workflow_output_is_seam_free(comfy, pack, name, sampler_node, decode_node):
    # shipped at real sizes; shrunk for the CPU, with enough steps that the random-weight decode settles
    graph = shrink_workflow(json.loads((WORKFLOWS / "api" / f"{name}.api.json").read_text()), steps=8)
    for spec in graph.values():
        if "sync_steps" in spec["inputs"]:
            spec["inputs"]["sync_steps"] = 2
        if spec["class_type"] in (
            "SDL3D_VAEDecode360",
            "SDL3D_VAEEncodeTiled",
        ):  # one piece, wrap padding of 8 latent cells
            spec["inputs"].update(tile_size=0, overlap=64)
    for spec in graph.values():  # every widget given, so the graph survives default changes
        cls = pack.by_id.get(spec["class_type"])
        if cls is not None:
            assert {i.id for i in cls.GET_SCHEMA().inputs} == set(spec["inputs"]), spec["class_type"]
        if spec["class_type"] == "CheckpointLoaderSimple":
            spec["inputs"]["ckpt_name"] = CKPT
    out = run_api_graph(pack, graph)
    image = out[decode_node][0]
    latent = out[sampler_node][0]
    assert image.shape[1:3] == (latent["samples"].shape[2] * 8, latent["samples"].shape[3] * 8)
    (plain,) = run_node(stock_node("VAEDecode"), samples=latent, vae=out["1"][2])
    ours, stock = seam_ratio(image), seam_ratio(plain)
    print(f"{name}: seam ratio {ours:.3f} (stock VAE Decode {stock:.3f})")
    assert torch.isfinite(image).all()
    assert ours <= 1.5
