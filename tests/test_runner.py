"""The batch runner (scripts/run_batch.py) against real ComfyUI servers on loopback ports, on the fixtures.

Three servers are started by PID for the module (in parallel) and stopped at the end; the last test kills one of
them mid-batch. The runner runs as a subprocess, exactly as users call it. Workflows are the shipped UI files,
converted through the server's /object_info. The batches run stereo360_tb.json (ODS stereo from the shipped
RGB + 16-bit depth, no model to load, a few seconds a job on 2 cores) with a different ipd_m per job, set by
node title in the batch file, so no job is served from the cache; the single-job tests run ldm3d_txt2rgbd.json
(sampling on the LDM3D fixture) shrunk by overrides to 64x64 and one step.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from headless import ComfyClient, ComfyServer, free_port, prepare_base  # noqa: E402

from comfy_runner.graph import ui_to_api  # noqa: E402
from comfy_runner.local import offline_models_tree  # noqa: E402
from comfy_runner.outputs import file_sha256, read_manifest  # noqa: E402

RUNNER = REPO_ROOT / "scripts" / "run_batch.py"
TXT2RGBD = REPO_ROOT / "workflows" / "ldm3d_txt2rgbd.json"
MESH = REPO_ROOT / "workflows" / "stereo360_mesh.json"
STEREO = REPO_ROOT / "workflows" / "stereo360_tb.json"
SMALL = ["--size", "64x64", "--steps", "1"]
UI_WORKFLOWS = sorted(p for p in (REPO_ROOT / "workflows").glob("*.json") if not p.name.endswith(".api.json"))
pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def servers(fixture_models, comfyui_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("runner_servers")
    models = offline_models_tree(fixture_models, root / "models_offline")
    pool = [
        ComfyServer(comfyui_root, prepare_base(root / f"server-{i}", models, REPO_ROOT / "workflows" / "inputs"))
        for i in range(3)
    ]
    try:
        with concurrent.futures.ThreadPoolExecutor(len(pool)) as executor:
            list(executor.map(lambda server: server.start(timeout=300), pool))
        yield pool
    finally:
        for server in pool:
            server.stop()


@pytest.fixture(scope="module")
def object_info(servers):
    return ComfyClient(servers[0].url).object_info()


def run_runner(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def write_batch(path: Path, count: int, first_ipd_mm: int) -> Path:
    """A JSONL batch for STEREO: one job a line, each with its own eye distance (so each one really runs)."""
    path.write_text(
        "".join(
            json.dumps({"id": f"pano-{i:02d}", "Stereo 360 (ODS).ipd_m": (first_ipd_mm + 7 * i) / 1000}) + "\n"
            for i in range(count)
        )
    )
    return path


def check_outputs_match_manifest(out_dir: Path, records: list[dict]) -> None:
    for record in records:
        assert record["outputs"], record
        for item in record["outputs"]:
            path = out_dir / item["path"]
            assert path.is_file(), f"{record['job']}: {path} missing"
            assert path.stat().st_size == item["bytes"] and file_sha256(path) == item["sha256"], path


def final_records(out_dir: Path) -> dict[str, dict]:
    records = read_manifest(out_dir / "manifest.jsonl")
    last_run = records[-1]["run"] if records else None
    return {r["job"]: r for r in records if r["run"] == last_run}


# -- conversion ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ui_path", UI_WORKFLOWS, ids=[p.name for p in UI_WORKFLOWS])
def test_ui_workflow_converts_to_its_api_twin_through_object_info(ui_path, object_info):
    twin = json.loads((ui_path.parent / "api" / (ui_path.stem + ".api.json")).read_text())
    converted, _ = ui_to_api(json.loads(ui_path.read_text()), object_info)
    assert converted == twin


def test_conversion_follows_reroutes_primitives_and_bypass_and_drops_notes_and_muted(object_info):
    ui = json.loads(TXT2RGBD.read_text())
    twin = json.loads((TXT2RGBD.parent / "api" / "ldm3d_txt2rgbd.api.json").read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    next_id, next_link = 100, 100

    def add_node(kind, mode=0, inputs=(), widgets=None):
        nonlocal next_id
        next_id += 1
        ui["nodes"].append(
            {
                "id": next_id,
                "type": kind,
                "mode": mode,
                "inputs": list(inputs),
                "outputs": [],
                "widgets_values": widgets or [],
            }
        )
        return next_id

    def reroute_link(link_id, via_kind, mode=0):
        """Put a node of `via_kind` on an existing link: origin -> via (input 0) -> original target."""
        nonlocal next_link
        link = links[link_id]
        via = add_node(via_kind, mode, inputs=[{"name": "in", "type": link[5], "link": link_id}])
        next_link += 1
        ui["links"].append([next_link, via, 0, link[3], link[4], link[5]])
        link[3], link[4] = via, 0
        for slot in nodes[ui["links"][-1][3]]["inputs"]:
            if slot.get("link") == link_id:
                slot["link"] = next_link
        return via

    ksampler = next(n for n in ui["nodes"] if n["type"] == "KSampler")
    clip_link = next(s["link"] for s in nodes[2]["inputs"] if s["name"] == "clip")
    reroute_link(clip_link, "Reroute")
    negative_link = next(s["link"] for s in ksampler["inputs"] if s["name"] == "negative")
    bypassed = reroute_link(negative_link, "ConditioningZeroOut", mode=4)
    ui["nodes"][-1]["inputs"][0]["name"] = "conditioning"
    ui["nodes"][-1]["outputs"] = [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [next_link]}]
    add_node("Note", widgets=["a note"])
    add_node("SaveImage", mode=2, widgets=["muted/never"])
    primitive = add_node("PrimitiveNode", widgets=[twin["5"]["inputs"]["seed"], "fixed"])
    next_link += 1
    ui["links"].append([next_link, primitive, 0, ksampler["id"], 99, "INT"])
    ksampler["inputs"].append({"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": next_link})

    converted, _ = ui_to_api(ui, object_info)
    assert str(bypassed) not in converted
    assert converted == twin


# -- running ------------------------------------------------------------------------------------------------------
def test_one_server_runs_one_job_with_graph_in_png_and_16bit_depth(servers, tmp_path):
    from PIL import Image

    out = tmp_path / "out"
    result = run_runner(
        TXT2RGBD, "--url", servers[0].url, *SMALL, "--seed", 11, "--prompt", "a red room", "--output-dir", out
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("done: 1 jobs (1 ok)")
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "ok" and record["server"] == servers[0].url and record["prompt_id"]
    assert record["timings"]["run_s"] > 0 and record["error"] is None
    check_outputs_match_manifest(out, [record])
    by_node = {item["node"]: out / item["path"] for item in record["outputs"]}
    assert set(by_node) == {"7", "8"}, "the RGB and the 16-bit depth, not the temp preview"
    rgb = Image.open(by_node["7"])
    graph = json.loads(rgb.info["workflow"])
    ksampler = next(n for n in graph["nodes"] if n["type"] == "KSampler")
    assert ksampler["widgets_values"][0] == 11, "the embedded UI graph carries the overrides"
    assert json.loads(rgb.info["prompt"])["2"]["inputs"]["text"] == "a red room"
    assert Image.open(by_node["8"]).mode in ("I;16", "I;16B", "I")


def test_cpu_preset_progress_lines_and_a_job_longer_than_timeout_that_keeps_progressing(servers, tmp_path):
    """On CPU servers the preset is applied and said once; log mode prints step lines; --timeout is a stall limit,
    so a job that runs several times longer than it, but keeps making progress, completes."""
    out = tmp_path / "out"
    stall_limit_s = 2
    started = time.monotonic()
    result = run_runner(
        TXT2RGBD, "--url", servers[1].url, "--size", "256x256", "--set", "KSampler.steps=60",
        "--timeout", stall_limit_s, "--log-every", 1, "--output-dir", out,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    # Relative to the limit, not to this machine's speed: the job must outlast the limit several times over.
    assert elapsed > 3 * stall_limit_s, f"the job took {elapsed:.1f} s: too short to show the stall limit"
    assert result.stderr.count("CPU preset (no server has a GPU): ") == 1, result.stderr
    steps = re.findall(r"job-0001: step (\d+)/(\d+) in node 5 \(KSampler\), \d+ s", result.stderr)
    assert len(steps) >= 2 and steps[0] != steps[-1], result.stderr
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "ok" and record["timings"]["run_s"] > 3 * stall_limit_s, record


def test_mesh_outputs_are_downloaded_with_their_companions(servers, tmp_path):
    out = tmp_path / "out"
    result = run_runner(MESH, "--url", servers[0].url, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    (record,) = read_manifest(out / "manifest.jsonl")
    suffixes = {Path(item["path"]).suffix for item in record["outputs"]}
    assert {".glb", ".obj", ".mtl", ".ply", ".png"} <= suffixes, suffixes
    check_outputs_match_manifest(out, [record])


def test_three_servers_run_twelve_jobs(servers, tmp_path):
    out = tmp_path / "out"
    batch = write_batch(tmp_path / "jobs.jsonl", 12, first_ipd_mm=20)
    started = time.monotonic()
    result = run_runner(STEREO, "--batch", batch, "--output-dir", out, *[a for s in servers for a in ("--url", s.url)])
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    records = final_records(out)
    assert sorted(records) == [f"pano-{i:02d}" for i in range(12)]
    assert {r["status"] for r in records.values()} == {"ok"}
    check_outputs_match_manifest(out, list(records.values()))
    assert {r["server"] for r in records.values()} == {s.url for s in servers}, "every server got work"
    stereo_hashes = {r["outputs"][0]["sha256"] for r in records.values()}
    assert len(stereo_hashes) == 12, "each job ran with its own eye distance"
    print(f"12 jobs on 3 servers: {elapsed:.1f} s")


def test_resume_after_interrupted_run_finishes_only_what_is_missing(servers, tmp_path):
    out = tmp_path / "out"
    batch = write_batch(tmp_path / "jobs.jsonl", 6, first_ipd_mm=21)
    first = subprocess.Popen(
        [
            sys.executable,
            str(RUNNER),
            STEREO,
            "--batch",
            batch,
            "--output-dir",
            out,
            "--url",
            servers[1].url,
            "--depth",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None:
            if sum(r["status"] == "ok" for r in read_manifest(out / "manifest.jsonl")) >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before it could be interrupted"
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    done_before = {r["job"] for r in read_manifest(out / "manifest.jsonl") if r["status"] == "ok"}
    assert 2 <= len(done_before) < 6

    result = run_runner(
        STEREO, "--batch", batch, "--output-dir", out, "--resume", "--url", servers[1].url, "--url", servers[0].url
    )
    assert result.returncode == 0, result.stderr
    records = final_records(out)
    assert len(records) == 6
    assert {j for j, r in records.items() if r["status"] == "skipped"} == done_before
    assert {j for j, r in records.items() if r["status"] == "ok"} == {f"pano-{i:02d}" for i in range(6)} - done_before
    check_outputs_match_manifest(out, list(records.values()))


def test_validation_error_gives_its_exit_code_and_is_not_retried(servers, tmp_path):
    out = tmp_path / "out"
    result = run_runner(
        TXT2RGBD,
        "--url",
        servers[0].url,
        "--url",
        servers[1].url,
        *SMALL,
        "--set",
        "KSampler.steps=0",
        "--output-dir",
        out,
    )
    assert result.returncode == 3, result.stderr
    assert "FAILED" in result.stderr.strip().splitlines()[-1]
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "validation_error" and len(record["attempts"]) == 1
    assert "steps" in record["error"] and "min" in record["error"], record["error"]


def test_partly_rejected_graph_is_a_validation_error_and_is_taken_off_the_server(servers, tmp_path):
    """ComfyUI answers 200 and runs the rest when only some outputs fail validation (here ipd_m = 999 drops the
    Stereo 360 branch: outputs 4, 5, 7): the job is a validation error, shown with the node's message."""
    out = tmp_path / "out"
    api = REPO_ROOT / "workflows" / "api" / "stereo360_tb.api.json"
    result = run_runner(api, "--url", servers[0].url, "--set", "SDL3D_Stereo360.ipd_m=999", "--output-dir", out)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("FAILED: 1 jobs (1 validation_error)")
    assert "(ODS): input 'ipd_m' = 999.0: is above the maximum 0.2. Fix:" in result.stderr, result.stderr
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "validation_error" and len(record["attempts"]) == 1
    assert record["error"].startswith("the server dropped output nodes 4, 5, 7 (failed validation)"), record["error"]
    assert record["error"].count("input 'ipd_m' = 999.0") == 1, "ComfyUI repeats it per named input; shown once"
    assert record["error_details"]["node_errors"]["3"]["class_type"] == "SDL3D_Stereo360"
    assert not (out / "job-0001" / "job.json").exists()
    with urllib.request.urlopen(servers[0].url + "/queue", timeout=10) as response:
        queue = json.loads(response.read())
    listed = {item[1] for key in ("queue_running", "queue_pending") for item in queue[key]}
    assert record["prompt_id"] not in listed, "the accepted rest of the graph stays queued"


def test_output_node_that_reports_nothing_is_not_ok(servers, tmp_path):
    """VAESave saves a file but reports none: the job ran, the PNG is downloaded, the job is not 'ok'."""
    out = tmp_path / "out"
    graph = {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "save_vae": {"class_type": "VAESave", "inputs": {"vae": ["vae", 0], "filename_prefix": "runner/taesd"}},
        "img": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 0}},
        "save_png": {"class_type": "SaveImage", "inputs": {"images": ["img", 0], "filename_prefix": "runner/png"}},
    }
    path = tmp_path / "silent_output.api.json"
    path.write_text(json.dumps(graph))
    for run in range(2):  # the second run (--resume) must run it again: no job.json was written
        result = run_runner(path, "--url", servers[0].url, "--output-dir", out, *(["--resume"] if run else []))
        assert result.returncode == 4, result.stderr
        assert "1 missing_outputs" in result.stderr.strip().splitlines()[-1]
        record = list(final_records(out).values())[0]
        assert record["status"] == "missing_outputs", record
        assert record["error"] == "output node save_vae (VAESave) produced nothing", record["error"]
        assert [item["node"] for item in record["outputs"]] == ["save_png"]
        check_outputs_match_manifest(out, [record])
        assert not (out / "job-0001" / "job.json").exists()


def test_execution_error_gives_its_exit_code_with_the_servers_message(servers, tmp_path):
    """A graph that passes validation and fails in execution: LDM3D Decode given an SD (TAESD) VAE."""
    out = tmp_path / "out"
    graph = {
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "taesd"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "dec": {
            "class_type": "SDL3D_LDM3DDecode",
            "inputs": {
                "samples": ["lat", 0],
                "vae": ["vae", 0],
                "depth_6ch": "exact",
                "tiled": False,
                "tile_size": 512,
                "overlap": 128,
                "circular": False,
            },
        },
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }
    path = tmp_path / "wrong_vae.api.json"
    path.write_text(json.dumps(graph))
    result = run_runner(path, "--url", servers[0].url, "--output-dir", out)
    assert result.returncode == 4, result.stderr
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "execution_error" and len(record["attempts"]) == 1
    assert "vae" in record["error"] and "LDM3D" in record["error"], record["error"]


def test_unreachable_url_gives_its_exit_code_and_records_the_jobs(tmp_path):
    out = tmp_path / "out"
    result = run_runner(TXT2RGBD, "--url", f"http://127.0.0.1:{free_port()}", "--output-dir", out, timeout=120)
    assert result.returncode == 5, result.stderr
    (record,) = read_manifest(out / "manifest.jsonl")
    assert record["status"] == "unreachable" and "no server reachable" in record["error"]


def test_bad_override_is_a_usage_error_before_anything_runs(servers, tmp_path):
    result = run_runner(
        TXT2RGBD, "--url", servers[0].url, "--set", "No such node.seed=1", "--output-dir", tmp_path / "out"
    )
    assert result.returncode == 2
    assert "no node 'No such node'" in result.stderr and "'KSampler'" in result.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_killed_server_mid_batch_has_its_jobs_requeued(servers, tmp_path):
    """Runs last: it kills servers[2] by PID while that server executes one of our jobs."""
    victim = servers[2]
    out = tmp_path / "out"
    batch = write_batch(tmp_path / "jobs.jsonl", 12, first_ipd_mm=22)
    runner = subprocess.Popen(
        [
            sys.executable,
            str(RUNNER),
            STEREO,
            "--batch",
            batch,
            "--output-dir",
            out,
            *[a for s in servers for a in ("--url", s.url)],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    try:
        deadline = time.monotonic() + 300
        killed = False
        while time.monotonic() < deadline and runner.poll() is None:
            with urllib.request.urlopen(victim.url + "/queue", timeout=10) as response:
                queue = json.loads(response.read())
            if queue["queue_running"] and queue["queue_pending"]:
                victim.process.kill()  # by PID, mid-job, with another job waiting on it
                victim.process.wait(timeout=30)
                killed = True
                break
            time.sleep(0.05)
        assert killed, "the victim server never had a running and a waiting job"
        stdout, stderr = runner.communicate(timeout=600)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, stderr
    records = final_records(out)
    assert sorted(records) == [f"pano-{i:02d}" for i in range(12)]
    assert {r["status"] for r in records.values()} == {"ok"}
    check_outputs_match_manifest(out, list(records.values()))
    requeued = [r for r in records.values() if any(a["server"] == victim.url and a.get("error") for a in r["attempts"])]
    assert len(requeued) >= 2, "the running and the waiting job of the killed server"
    assert all(r["server"] != victim.url for r in requeued)
    assert "re-queued" in stderr
