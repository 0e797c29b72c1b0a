"""API-level robustness suite: bad inputs for every node, posted to one real headless ComfyUI server.

Each case is an API-format graph with one bad value. It must be answered either with HTTP 400 whose
node_errors name the input at fault, or with an execution error whose message names the node and the input.
Across the module the server must stay up, no file may appear outside output/ and temp/ (a planted outside
folder and an outside PNG are checked), and the server's peak RSS must stay under RSS_BOUND_GIB. The server
runs with SDL3D_MEMORY_LIMIT_MB so the memory guards give the same answer on every machine.
docs/hardening.md lists the cases and what each returns.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from headless import ComfyClient, ComfyServer, WorkflowError, prepare_base  # noqa: E402
from robustness_cases import CASES  # noqa: E402
from robustness_graphs import load_depth  # noqa: E402

from comfy_runner.local import offline_models_tree  # noqa: E402

pytestmark = pytest.mark.server
MEMORY_LIMIT_MB = 3072
RSS_BOUND_GIB = 8.0


# ---------------------------------------------------------------- server and helpers


@pytest.fixture(scope="module")
def env(fixture_models, comfyui_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("robust_base")
    outside = tmp_path_factory.mktemp("robust_outside")
    models = offline_models_tree(fixture_models, base / "models_offline")
    prepare_base(base, models)
    secret = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    for where in (outside / "secret16.png", base / "secret16.png"):
        Image.fromarray(secret).save(where)
    (base / "input" / "escape_link.png").symlink_to(outside / "secret16.png")
    (base / "input" / "notes.png").write_text("not an image, only text\n" * 100)
    (base / "output" / "link_out").symlink_to(outside, target_is_directory=True)
    before_outside = sorted(p.name for p in outside.iterdir())
    before_base = _files(base, skip=("output", "temp", "user", "models_offline"))
    previous = os.environ.get("SDL3D_MEMORY_LIMIT_MB")
    os.environ["SDL3D_MEMORY_LIMIT_MB"] = str(MEMORY_LIMIT_MB)
    srv = ComfyServer(comfyui_root, base)
    try:
        srv.start()
    finally:
        if previous is None:
            os.environ.pop("SDL3D_MEMORY_LIMIT_MB", None)
        else:
            os.environ["SDL3D_MEMORY_LIMIT_MB"] = previous
    try:
        yield {
            "server": srv,
            "client": ComfyClient(srv.url),
            "base": base,
            "outside": outside,
            "before_outside": before_outside,
            "before_base": before_base,
        }
    finally:
        srv.stop()


def _files(root: Path, skip=()) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in skip:
            dirnames[:] = []
            continue
        found.update(str(rel / f) for f in filenames if not f.endswith(".log"))
    return found


def post_prompt(client: ComfyClient, graph: dict) -> tuple[int, dict]:
    body = json.dumps({"prompt": graph, "client_id": client.client_id}).encode()  # NaN/Infinity as JSON tokens
    request = urllib.request.Request(client.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _fill(graph: dict, outside: Path) -> dict:
    text = json.dumps(graph).replace("{outside}", str(outside))
    return json.loads(text)


RESULTS: dict[str, str] = {}


@pytest.mark.parametrize("case_id,build,input_name,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_naming_the_input(env, case_id, build, input_name, expected):
    client, base = env["client"], env["base"]
    graph = _fill(build(), env["outside"])
    node_type = graph["t"]["class_type"]
    status, answer = post_prompt(client, graph)
    if expected == "400":
        assert status == 400, f"{case_id}: expected HTTP 400, got {status}: {answer}"
        errors = answer.get("node_errors", {}).get("t", {}).get("errors", [])
        assert errors, f"{case_id}: no node_errors for the node under test: {answer}"
        named = [
            e
            for e in errors
            if (e["type"] == "custom_validation_failed" and f"input '{input_name}'" in e.get("details", ""))
            or (e["type"] != "custom_validation_failed" and e.get("extra_info", {}).get("input_name") == input_name)
        ]
        assert named, f"{case_id}: no error names input '{input_name}': {errors}"
        text = named[0].get("details", "") or named[0].get("message", "")
    else:
        assert status == 200, f"{case_id}: expected the prompt to be queued, got {status}: {answer}"
        with pytest.raises(WorkflowError) as failure:
            client.wait(answer["prompt_id"], timeout=300)
        text = str(failure.value)
        assert f"({node_type}) failed" in text, text
        assert f"input '{input_name}'" in text, f"{case_id}: the error does not name '{input_name}': {text}"
        assert "Fix:" in text, text
    sent = graph["t"]["inputs"].get(input_name)
    shown = text.replace(sent, "<sent>") if isinstance(sent, str) and sent else text  # the user's own value
    for leak in (str(base), str(env["outside"]), " object at 0x"):
        assert leak not in shown, f"{case_id}: the message shows a server path or an object repr: {text}"
    RESULTS[case_id] = f"{'HTTP 400' if expected == '400' else 'execution error'}: {text[:400]}"


def test_suite_has_enough_cases_over_every_node(pack):
    assert len(CASES) >= 60
    covered = {build()["t"]["class_type"] for _, build, _, _ in CASES}
    assert covered == set(pack.by_id), f"nodes without bad-input cases: {set(pack.by_id) - covered}"


def test_same_refusal_whether_or_not_an_outside_file_exists(env):
    answers = []
    for name in ("../secret16.png", "../no_such_file.png"):
        _, answer = post_prompt(env["client"], load_depth(name))
        answers.append(answer["node_errors"]["t"]["errors"][0]["details"].replace(name, "NAME"))
    assert answers[0] == answers[1]


def test_server_stayed_up_wrote_nothing_outside_and_kept_memory_bounded(env):
    client, base, outside = env["client"], env["base"], env["outside"]
    assert client.get_json("/system_stats")["system"]
    assert sorted(p.name for p in outside.iterdir()) == env["before_outside"], "a file appeared outside ComfyUI"
    assert _files(base, skip=("output", "temp", "user", "models_offline")) == env["before_base"]
    real_out = os.path.realpath(base / "output")
    for path in (base / "output").rglob("*"):
        if path.is_file():
            assert os.path.realpath(path).startswith(real_out + os.sep), path
    status = Path(f"/proc/{env['server'].process.pid}/status")
    if status.exists():
        peak_kib = int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM")))
        assert peak_kib / 2**20 < RSS_BOUND_GIB, f"server peak RSS {peak_kib / 2**20:.2f} GiB"
        print(f"server peak RSS {peak_kib / 2**20:.2f} GiB over {len(CASES)} cases")
    assert env["server"].process.poll() is None, "the server died"
    table = os.environ.get("SDL3D_ROBUSTNESS_TABLE")
    if table:  # docs/hardening.md's table is made from this
        Path(table).write_text("".join(f"| {case_id} | {RESULTS.get(case_id, 'not run')} |\n" for case_id, *_ in CASES))
