"""Real ComfyUI started headless with the pack linked into custom_nodes: load gate, /object_info, workflows.

The server is started once per session by PID and stopped at the end; every workflows/api/*.api.json runs end
to end (shrunk by tests/workflow_overrides.py) on the random-weight fixtures (mapped onto the model names the
workflows expect, as the main job does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from headless import ComfyClient, ComfyServer, WorkflowError, output_files, prepare_base  # noqa: E402
from object_info_check import check_api, check_ui  # noqa: E402

from comfy_runner.local import missing_inputs, offline_models_tree, offline_prompt  # noqa: E402
from workflow_overrides import shrink_workflow  # noqa: E402

API_WORKFLOWS = sorted((REPO_ROOT / "workflows" / "api").glob("*.api.json"))
UI_WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
# Saved from main before nodes/ became feature packages (commit fce621f): node ids and inputs must still fit.
SAVED_BEFORE_THE_MOVE = sorted((REPO_ROOT / "tests" / "data" / "saved_before_feature_packages").glob("*.json"))
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(fixture_models, comfyui_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("server_base")
    models = offline_models_tree(fixture_models, base / "models_offline")
    prepare_base(base, models, REPO_ROOT / "workflows" / "inputs")
    srv = ComfyServer(comfyui_root, base)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return ComfyClient(server.url)


@pytest.fixture(scope="module")
def object_info(client):
    return client.object_info()


def test_pack_imports_without_errors(server):
    assert server.pack_import_errors() == [], server.log_tail()
    assert "syncdiffusion-ldm3d" in server.log_text(), "the pack was not even tried: is the link in custom_nodes?"


def test_every_declared_node_is_registered_with_its_inputs_and_outputs(pack, object_info):
    assert pack.node_classes, "the pack declares no nodes"
    for node_id, cls in pack.by_id.items():
        assert node_id in object_info, f"{node_id} missing from /object_info"
        declared, served = cls.GET_NODE_INFO_V1(), object_info[node_id]
        for section in ("required", "optional"):
            assert sorted(declared["input"].get(section, {})) == sorted(served["input"].get(section, {})), node_id
        assert list(declared["output"]) == list(served["output"]), node_id
        assert served["category"].startswith("syncdiffusion-ldm3d/"), node_id


@pytest.mark.parametrize("workflow", API_WORKFLOWS, ids=[p.name for p in API_WORKFLOWS])
def test_shipped_workflow_runs_headless(workflow, client, object_info, server):
    # shipped at real sizes; CPU tests run small, with the fixture stand-ins for models that have no tiny twin
    prompt = offline_prompt(shrink_workflow(json.loads(workflow.read_text())))
    assert missing_inputs(prompt, object_info, "models") == []
    try:
        entry = client.run(prompt, timeout=900)
    except WorkflowError as err:
        pytest.fail(f"{workflow.name}: {err}\n{server.log_tail()}")
    files = output_files(entry)
    output_nodes = {nid for nid, node in prompt.items() if object_info[node["class_type"]].get("output_node")}
    assert output_nodes, f"{workflow.name} has no output node"
    assert output_nodes <= {f["node"] for f in files}, f"output nodes without files: {output_nodes}"
    for info in files:
        assert len(client.download(info)) > 0, info


@pytest.fixture(scope="module")
def compatible(comfy):
    from comfy_execution.validation import validate_node_input

    return validate_node_input


@pytest.mark.parametrize("path", API_WORKFLOWS + UI_WORKFLOWS, ids=[p.name for p in API_WORKFLOWS + UI_WORKFLOWS])
def test_shipped_workflow_fits_the_servers_object_info(path, object_info, compatible):
    """Node types, input names, widget types, min/max, combo options (model names: the fixtures under the names the
    workflows expect) and link types, against the running server's /object_info (tests/object_info_check.py)."""
    workflow = json.loads(path.read_text())
    check = check_ui if path.parent.name == "workflows" else check_api
    assert check(workflow, object_info, compatible) == []


@pytest.mark.parametrize("path", SAVED_BEFORE_THE_MOVE, ids=[p.name for p in SAVED_BEFORE_THE_MOVE])
def test_workflow_saved_before_the_feature_packages_still_fits(path, object_info, compatible):
    workflow = json.loads(path.read_text())
    check = check_api if path.name.endswith(".api.json") else check_ui
    assert check(workflow, object_info, compatible) == []


def test_object_info_check_catches_each_kind_of_mistake(object_info, compatible):
    ui = json.loads((REPO_ROOT / "workflows" / "stereo360_mesh.json").read_text())
    prompt = json.loads((REPO_ROOT / "workflows" / "api" / "stereo360_mesh.api.json").read_text())
    assert check_ui(ui, object_info, compatible) == [] and check_api(prompt, object_info, compatible) == []
    mesh_id = next(k for k, v in prompt.items() if v["class_type"] == "SDL3D_SaveDepthMesh")
    int_name, int_spec = next(
        (k, v)
        for k, v in object_info["SDL3D_SaveDepthMesh"]["input"]["required"].items()
        if v[0] == "INT" and "max" in v[1]
    )
    link_input = next(k for k, v in prompt[mesh_id]["inputs"].items() if isinstance(v, list))
    mistakes = {
        "unknown node type": lambda p: p[mesh_id].update(class_type="NoSuchNode"),
        "no such input": lambda p: p[mesh_id]["inputs"].update(no_such_input=1),
        "> max": lambda p: p[mesh_id]["inputs"].update({int_name: int_spec[1]["max"] + 1}),
        "is not a INT": lambda p: p[mesh_id]["inputs"].update({int_name: 1.5}),
        "is not one of": lambda p: p[mesh_id]["inputs"].update(format="gif"),
        "required input": lambda p: p[mesh_id]["inputs"].pop(int_name),
        "does not exist": lambda p: p[mesh_id]["inputs"].update({link_input: [p[mesh_id]["inputs"][link_input][0], 9]}),
        "does not fit": lambda p: p[mesh_id]["inputs"].update({link_input: [mesh_id, 0]}),
    }
    for needle, mutate in mistakes.items():
        bad = json.loads(json.dumps(prompt))
        mutate(bad)
        assert any(needle in problem for problem in check_api(bad, object_info, compatible)), needle
    for needle, mutate in {
        "left over": lambda w, n: n["widgets_values"].append(1),
        "does not fit": lambda w, n: w["links"][0].__setitem__(1, n["id"]),
        "is not one of": lambda w, n: n["widgets_values"].__setitem__(0, "gif"),
    }.items():
        bad_ui = json.loads(json.dumps(ui))
        mutate(bad_ui, next(n for n in bad_ui["nodes"] if n["type"] == "SDL3D_SaveDepthMesh"))
        assert any(needle in problem for problem in check_ui(bad_ui, object_info, compatible)), needle
