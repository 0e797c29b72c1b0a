"""Every shipped workflow has a UI-format (0.4) twin that maps back onto its API-format graph."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from make_ui_workflow import _node_info, ui_to_api  # noqa: E402

API_WORKFLOWS = sorted((REPO_ROOT / "workflows" / "api").glob("*.api.json"))


@pytest.fixture(scope="module")
def object_info(comfy, pack):
    info = {name: _node_info(cls) for name, cls in comfy.nodes.NODE_CLASS_MAPPINGS.items()}
    info.update({node_id: cls.GET_NODE_INFO_V1() for node_id, cls in pack.by_id.items()})
    return info


@pytest.mark.parametrize("api_path", API_WORKFLOWS, ids=[p.name for p in API_WORKFLOWS])
def test_ui_twin_matches_api_workflow(api_path, object_info):
    ui_path = REPO_ROOT / "workflows" / api_path.name.replace(".api.json", ".json")
    assert ui_path.exists(), f"{api_path.name} has no UI twin: run scripts/make_ui_workflow.py {api_path}"
    prompt, ui = json.loads(api_path.read_text()), json.loads(ui_path.read_text())
    assert ui["version"] == 0.4 and {"last_node_id", "last_link_id", "nodes", "links"} <= set(ui)
    for node in ui["nodes"]:
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "properties"} <= set(node)
    stripped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in prompt.items()}
    assert ui_to_api(ui, object_info) == stripped
    for link_id, origin, slot, target, target_slot, kind in ui["links"]:
        target_node = next(n for n in ui["nodes"] if n["id"] == target)
        assert target_node["inputs"][target_slot]["link"] == link_id
        origin_node = next(n for n in ui["nodes"] if n["id"] == origin)
        assert link_id in origin_node["outputs"][slot]["links"] and origin_node["outputs"][slot]["type"] == kind


def test_every_model_a_workflow_names_has_a_fixture_and_a_source(fixture_models):
    manifest = json.loads((REPO_ROOT / "workflows" / "models" / "expected_models.json").read_text())["models"]
    for entry in manifest:
        assert (fixture_models / entry["fixture"]).exists(), entry
        assert entry["source"] and entry["folder"] and entry["name"], entry
