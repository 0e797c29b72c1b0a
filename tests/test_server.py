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
from comfy_runner.local import missing_inputs, offline_models_tree, offline_prompt  # noqa: E402
from workflow_overrides import shrink_workflow  # noqa: E402

API_WORKFLOWS = sorted((REPO_ROOT / "workflows" / "api").glob("*.api.json"))
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(fixture_models, tmp_path_factory):
    from conftest import comfyui_dir

    base = tmp_path_factory.mktemp("server_base")
    models = offline_models_tree(fixture_models, base / "models_offline")
    prepare_base(base, models, REPO_ROOT / "workflows" / "inputs")
    srv = ComfyServer(comfyui_dir(), base)
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
