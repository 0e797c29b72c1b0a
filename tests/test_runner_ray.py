"""``run_batch.py --ray``: the batch runner on a local Ray (started by each run), actors owning real ComfyUI servers.

Each run starts its own local Ray and its actors' ComfyUI servers on the CPU, on the offline fixtures, and shuts
them down at the end. The batches are the HTTP pool tests' (tests/test_runner.py): stereo360_tb.json with one eye
distance per job, a couple of seconds a job. Skipped, saying so, only where Ray is not installed (CI installs the
``[ray]`` extra in scripts/bootstrap.sh).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from test_runner import RUNNER, STEREO, check_outputs_match_manifest, final_records, run_runner, write_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (scripts/bootstrap.sh does)")
pytestmark = pytest.mark.server
RAY = ["--ray", "--offline-fixtures"]
ACTOR_LINE = re.compile(r"actor (\d+): ComfyUI http://[\d.]+:(\d+) \(actor pid (\d+), ComfyUI pid (\d+)\)")


def comparable(records: dict[str, dict]) -> dict[str, dict]:
    """What must not depend on the pool: ids, graphs, overrides, and each output's place, size and sha256 (the
    file name's counter, _00003_, is the server's own and depends on which server ran what, so it is masked)."""
    return {
        job: {
            "status": r["status"],
            "graph": r["graph_sha256"],
            "overrides": r["overrides"],
            "outputs": [
                (o["node"], o["kind"], o["subfolder"], re.sub(r"_\d{5}_", "_N_", o["path"]), o["bytes"], o["sha256"])
                for o in r["outputs"]
            ],
        }
        for job, r in records.items()
    }


def heavy_batch(path: Path, count: int, first_ipd_mm: int) -> Path:
    """write_batch's jobs with supersample 2 (4x the warp work): less overhead per job, a wider window to kill in."""
    rows = [json.loads(line) for line in write_batch(path, count, first_ipd_mm).read_text().splitlines()]
    path.write_text("".join(json.dumps({**row, "Stereo 360 (ODS).supersample": 2}) + "\n" for row in rows))
    return path


def jobs_per_minute(records: dict[str, dict]) -> float:
    """Jobs over the span from the first submission to the last job's end (Ray and ComfyUI start-up excluded)."""
    starts = [a["submitted_at"] for r in records.values() for a in r["attempts"]]
    ends = [r["attempts"][-1]["submitted_at"] + r["timings"]["total_s"] for r in records.values()]
    return len(records) / ((max(ends) - min(starts)) / 60)


class Runner:
    """The runner as a subprocess, its stderr read line by line (the actor lines give their PIDs and ports)."""

    def __init__(self, *args):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(RUNNER), *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    def actors(self) -> dict[int, dict]:
        found = (ACTOR_LINE.search(line) for line in list(self.lines))
        return {int(m[1]): {"port": int(m[2]), "pid": int(m[3]), "comfy_pid": int(m[4])} for m in found if m}

    def finish(self, timeout: float = 600) -> tuple[int, str, str]:
        try:  # not communicate(): it would read stderr too, racing the reader thread for its lines
            self.process.wait(timeout=timeout)
            stdout = self.process.stdout.read()
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self.reader.join(timeout=10)
        return self.process.returncode, stdout, "".join(self.lines)


def queue_of(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/queue", timeout=10) as response:
        return json.loads(response.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def test_ray_two_actors_run_eight_jobs_like_the_http_pool(fixture_models, tmp_path):
    """2 actors run 8 jobs; 1 actor runs them too (the jobs/min ratio in the README); the manifest equals the HTTP
    pool's (one local server) for the same batch: ids, graphs, overrides, output files with their sha256."""
    batch = heavy_batch(tmp_path / "jobs.jsonl", 8, first_ipd_mm=30)
    runs = {}
    for actors in (2, 1):
        out = tmp_path / f"ray{actors}"
        result = run_runner(STEREO, *RAY, "--ray-actors", actors, "--batch", batch, "--output-dir", out)
        assert result.returncode == 0, result.stderr
        assert "a local Ray started for this run" in result.stderr and "dashboard" in result.stderr
        records = final_records(out)
        assert sorted(records) == [f"pano-{i:02d}" for i in range(8)]
        assert {r["status"] for r in records.values()} == {"ok"}
        check_outputs_match_manifest(out, list(records.values()))
        assert all(outputs_marker_ok(out / job) for job in records)
        assert len({r["server"] for r in records.values()}) == actors, "every actor got work"
        runs[actors] = records
    http = tmp_path / "http"
    result = run_runner(STEREO, "--offline-fixtures", "--local-servers", 1, "--batch", batch, "--output-dir", http)
    assert result.returncode == 0, result.stderr
    http_records = final_records(http)
    assert comparable(runs[2]) == comparable(http_records) == comparable(runs[1])
    assert len({r["outputs"][0]["sha256"] for r in http_records.values()}) == 8, "each job ran with its own ipd"
    one, two = jobs_per_minute(runs[1]), jobs_per_minute(runs[2])
    print(f"Ray on CPU, 8 stereo360_tb jobs: 1 actor {one:.1f} jobs/min, 2 actors {two:.1f} jobs/min, x{two / one:.2f}")


def outputs_marker_ok(job_dir: Path) -> bool:
    from comfy_runner.outputs import completed

    marker = json.loads((job_dir / "job.json").read_text())
    return completed(job_dir, marker["graph_sha256"]) is not None


def test_ray_actor_killed_mid_batch_is_restarted_and_every_job_completes(fixture_models, tmp_path):
    """SIGKILL of an actor's process (by its PID) while its ComfyUI runs one of our jobs with another waiting:
    Ray restarts the actor (a new ComfyUI), retries its jobs, and all 8 complete with correct files."""
    out = tmp_path / "out"
    batch = heavy_batch(tmp_path / "jobs.jsonl", 8, first_ipd_mm=31)
    runner = Runner(STEREO, *RAY, "--ray-actors", 2, "--batch", batch, "--output-dir", out)
    victim = None
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and runner.process.poll() is None:
            actors = runner.actors()
            if 1 in actors:
                queue = queue_of(actors[1]["port"])
                if queue["queue_running"] and queue["queue_pending"]:
                    victim = actors[1]
                    os.kill(victim["pid"], signal.SIGKILL)  # the actor's process, mid-job
                    break
            time.sleep(0.05)
        assert victim is not None, "actor 1 never had a running and a waiting job:\n" + "".join(runner.lines)
        code, _, stderr = runner.finish()
    finally:
        if runner.process.poll() is None:
            runner.process.kill()
    assert code == 0, stderr
    records = final_records(out)
    assert sorted(records) == [f"pano-{i:02d}" for i in range(8)]
    assert {r["status"] for r in records.values()} == {"ok"}
    check_outputs_match_manifest(out, list(records.values()))
    assert len({r["outputs"][0]["sha256"] for r in records.values()}) == 8
    old_url_port = f":{victim['port']}"
    retried = [r for r in records.values() if any(a.get("error") for a in r["attempts"])]
    assert len(retried) >= 2, "the running and the waiting job of the killed actor"
    assert all(a["server"].endswith(old_url_port) for r in retried for a in r["attempts"] if a.get("error"))
    assert all(not r["server"].endswith(old_url_port) for r in retried), "finished on the restarted actor"
    assert "actor 1 was restarted by Ray" in stderr and "Ray retried it" in stderr, stderr
    assert not pid_alive(victim["comfy_pid"]), "the dead actor's ComfyUI was stopped by its watcher"
    summary = [line for line in stderr.splitlines() if "restarted" in line or "retried" in line]
    print("fault log:", *summary, sep="\n  ")


def test_ray_resume_after_interrupt_finishes_only_what_is_missing(fixture_models, tmp_path):
    out = tmp_path / "out"
    batch = write_batch(tmp_path / "jobs.jsonl", 6, first_ipd_mm=32)
    first = Runner(STEREO, *RAY, "--ray-actors", 1, "--depth", 1, "--batch", batch, "--output-dir", out)
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and first.process.poll() is None:
            if sum(r["status"] == "ok" for r in final_records(out).values()) >= 2:
                break
            time.sleep(0.1)
        assert first.process.poll() is None, "the first run ended before it could be interrupted"
        first.process.send_signal(signal.SIGINT)  # Ctrl-C
        code, _, stderr = first.finish(timeout=120)
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert code == 130, stderr
    comfy_pid = first.actors()[0]["comfy_pid"]
    deadline = time.monotonic() + 30
    while pid_alive(comfy_pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not pid_alive(comfy_pid), "the interrupted run's ComfyUI was stopped"
    done_before = {job for job, r in final_records(out).items() if r["status"] == "ok"}
    assert 2 <= len(done_before) < 6

    result = run_runner(STEREO, *RAY, "--ray-actors", 2, "--batch", batch, "--output-dir", out, "--resume")
    assert result.returncode == 0, result.stderr
    records = final_records(out)
    assert len(records) == 6
    assert {j for j, r in records.items() if r["status"] == "skipped"} == done_before
    assert {j for j, r in records.items() if r["status"] == "ok"} == {f"pano-{i:02d}" for i in range(6)} - done_before
    check_outputs_match_manifest(out, list(records.values()))


def test_ray_with_url_is_a_usage_error_before_anything_runs(tmp_path):
    """--url servers belong to the HTTP pool: --ray with --url says so and exits 2 without starting Ray."""
    result = run_runner(STEREO, "--ray", "--url", "http://127.0.0.1:9", "--output-dir", tmp_path / "out", timeout=120)
    assert result.returncode == 2, result.stderr
    assert "--url is the HTTP pool" in result.stderr and "Ray 2" not in result.stderr
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
