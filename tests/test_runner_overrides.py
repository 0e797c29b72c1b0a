"""The runner's override and batch-file parsing (no server: node definitions come from the pack's API twins).

Type conversion is checked against the real node definitions in tests/test_runner.py (through /object_info);
here the object_info is the minimal slice these functions read, written out for the inputs under test.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from comfy_runner.cli import make_jobs  # noqa: E402
from comfy_runner.graph import Workflow  # noqa: E402
from comfy_runner.overrides import (  # noqa: E402
    OverrideError,
    apply_row,
    apply_set,
    apply_shortcut,
    find_node,
    parse_set,
    read_batch,
    text_encoders,
)
from comfy_runner.presets import CPU_PRESET, shrink  # noqa: E402

PANORAMA = json.loads((REPO_ROOT / "workflows" / "api" / "panorama_360_stereo.api.json").read_text())
INFO = {
    "SDL3D_SyncDiffusionKSampler": {
        "display_name": "SyncDiffusion KSampler",
        "input": {
            "required": {
                "seed": ["INT", {"min": 0}],
                "steps": ["INT", {"min": 1}],
                "circular": ["BOOLEAN", {}],
                "cfg": ["FLOAT", {}],
                "anchor": [["left", "middle", "right"], {}],
            }
        },
    },
    "CLIPTextEncode": {"display_name": "CLIP Text Encode (Prompt)", "input": {"required": {"text": ["STRING", {}]}}},
    "EmptyLatentImage": {
        "display_name": "Empty Latent Image",
        "input": {"required": {"width": ["INT", {}], "height": ["INT", {}], "batch_size": ["INT", {}]}},
    },
    "SDL3D_LDM3DLoader": {"display_name": "LDM3D Loader", "input": {"required": {"model_name": [["ldm3d-pano"], {}]}}},
}


def test_parse_set_keeps_dots_in_titles_and_equals_in_values():
    assert parse_set("Load Checkpoint (SD 1.5).ckpt_name=a=b.safetensors") == (
        "Load Checkpoint (SD 1.5)",
        "ckpt_name",
        "a=b.safetensors",
    )
    for bad in ("seed=7", "KSampler.seed", ".seed=1"):
        with pytest.raises(OverrideError):
            parse_set(bad)


def test_find_node_by_id_title_class_display_name_and_title_prefix():
    assert find_node(PANORAMA, "6", INFO) == "6"
    assert find_node(PANORAMA, "Prompt", INFO) == "2", "an exact title beats the prefix 'Prompt' of nothing else"
    assert find_node(PANORAMA, "SDL3D_SyncDiffusionKSampler", INFO) == "6"
    assert find_node(PANORAMA, "SyncDiffusion KSampler", INFO) == "6"
    assert find_node(PANORAMA, "Equirect size", INFO) == "4"
    with pytest.raises(OverrideError, match="ambiguous"):
        find_node(PANORAMA, "CLIPTextEncode", INFO)
    with pytest.raises(OverrideError, match="no node 'Nope'.*'Negative prompt'"):
        find_node(PANORAMA, "Nope", INFO)


def test_values_are_converted_to_the_declared_type_and_links_are_protected():
    prompt, changes = copy.deepcopy(PANORAMA), {}
    apply_set(prompt, "SyncDiffusion KSampler.seed=8", INFO, changes)
    apply_set(prompt, "6.circular=false", INFO, changes)
    apply_set(prompt, "6.cfg=5", INFO, changes)
    apply_set(prompt, "Prompt.text=123", INFO, changes)
    inputs = prompt["6"]["inputs"]
    assert (inputs["seed"], inputs["circular"], inputs["cfg"]) == (8, False, 5.0)
    assert isinstance(inputs["cfg"], float) and prompt["2"]["inputs"]["text"] == "123"
    assert changes[("6", "seed")] == 8 and PANORAMA["6"]["inputs"]["seed"] == 7, "the loaded workflow is untouched"
    with pytest.raises(OverrideError, match="not a valid INT"):
        apply_set(prompt, "6.seed=seven", INFO, changes)
    with pytest.raises(OverrideError, match="connected to another node"):
        apply_set(prompt, "6.model=x", INFO, changes)
    with pytest.raises(OverrideError, match="no such input"):
        apply_set(prompt, "6.sed=1", INFO, changes)


def test_shortcuts_find_their_nodes():
    prompt, changes = copy.deepcopy(PANORAMA), {}
    assert text_encoders(prompt, "positive") == [("2", "text")]
    assert text_encoders(prompt, "negative") == [("3", "text")]
    for key, value in (
        ("prompt", "a lake"),
        ("negative", "fog"),
        ("seed", "9"),
        ("size", "1024x512"),
        ("steps", 20),
        ("checkpoint", "ldm3d-pano"),
    ):
        apply_shortcut(prompt, key, value, INFO, changes)
    assert prompt["2"]["inputs"]["text"] == "a lake" and prompt["3"]["inputs"]["text"] == "fog"
    assert (prompt["4"]["inputs"]["width"], prompt["4"]["inputs"]["height"]) == (1024, 512)
    assert prompt["6"]["inputs"]["seed"] == 9 and prompt["6"]["inputs"]["steps"] == 20
    assert prompt["1"]["inputs"]["model_name"] == "ldm3d-pano"
    with pytest.raises(OverrideError, match="WIDTHxHEIGHT"):
        apply_shortcut(prompt, "size", "1024", INFO, changes)


def test_batch_files_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "jobs.jsonl"
    jsonl.write_text('{"id": "a", "seed": 1, "6.steps": 3}\n\n# comment\n{"set": ["Prompt.text=x"]}\n')
    csv_file = tmp_path / "jobs.csv"
    csv_file.write_text('id,seed,Prompt.text\nb,2,a, quoted\nc,,"hello, world"\n')
    rows = read_batch(jsonl)
    assert [r.get("id") for r in rows] == ["a", None] and rows[1]["_where"].endswith(":4")
    prompt, changes = copy.deepcopy(PANORAMA), {}
    apply_row(prompt, rows[0], INFO, changes)
    assert (prompt["6"]["inputs"]["seed"], prompt["6"]["inputs"]["steps"]) == (1, 3)
    with pytest.raises(OverrideError, match="more cells than header"):
        read_batch(csv_file)
    csv_file.write_text('id,seed,Prompt.text\nb,2,x\nc,,"hello, world"\n')
    rows = read_batch(csv_file)
    assert rows[1] == {"id": "c", "Prompt.text": "hello, world", "_where": f"{csv_file}:3"}
    apply_row(prompt, rows[0], INFO, changes)
    assert prompt["6"]["inputs"]["seed"] == 2 and prompt["2"]["inputs"]["text"] == "x"
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "colour": 1}\n')
    with pytest.raises(OverrideError, match="bad.jsonl:1: unknown column 'colour'"):
        read_batch(tmp_path / "bad.jsonl")


def test_cpu_preset_shrinks_the_headline_graph_and_says_what_it_changed():
    shrunk, summary = shrink(PANORAMA, CPU_PRESET)
    sampler, latent, lpips = shrunk["6"]["inputs"], shrunk["4"]["inputs"], shrunk["5"]["inputs"]
    assert (latent["width"], latent["height"]) == (512, 256)
    assert (sampler["window"], sampler["steps"], sampler["sync_steps"]) == (256, 12, 3)
    assert sampler["stride"] == 128 and lpips["resolution"] == 128  # views overlap by half; LPIPS at 128 px
    assert (shrunk["12"]["inputs"]["mesh_width"], shrunk["12"]["inputs"]["mesh_height"]) == (512, 256)
    assert PANORAMA["6"]["inputs"]["steps"] == 50  # the shipped graph is not touched
    assert {"width 1024->512", "steps 50->12", "sync_steps 10->3", "LPIPS resolution 0->128"} <= set(summary)
    assert not any(entry.startswith("stride ") for entry in summary)  # 128 before and after: not a change
    # Window/stride ratios survive on every shipped API workflow, and nothing grows.
    for path in sorted((REPO_ROOT / "workflows" / "api").glob("*.api.json")):
        shipped = json.loads(path.read_text())
        small, _ = shrink(shipped, CPU_PRESET)
        for node_id, node in small.items():
            for name, value in node["inputs"].items():
                before = shipped[node_id]["inputs"][name]
                if isinstance(value, int) and name not in ("stride", "seed", "noise_seed") and before > 0:
                    assert value <= before, (path.name, node_id, name)
            if "window" in node["inputs"] and isinstance(node["inputs"]["window"], int):
                assert node["inputs"]["stride"] <= node["inputs"]["window"], (path.name, node_id)


def test_overrides_apply_after_the_preset():
    ns = SimpleNamespace(
        offline_fixtures=False,
        shrink_to=CPU_PRESET,
        prompt=None,
        negative=None,
        seed=None,
        size=None,
        steps="20",
        checkpoint=None,
        sets=["SyncDiffusion KSampler.seed=3"],
    )
    workflow = Workflow(path=Path("panorama.api.json"), api=copy.deepcopy(PANORAMA))
    (job,) = make_jobs(ns, workflow, [{}], INFO, Path("/tmp/unused"))
    inputs = job.prompt["6"]["inputs"]
    assert (inputs["steps"], inputs["seed"], inputs["window"]) == (20, 3, 256)
    assert "steps 50->12" in ns.preset_changes
