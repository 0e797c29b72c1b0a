"""Re-run the 81 bad or extreme inputs of issue 24 against a headless ComfyUI and print what each one does.

    python scripts/robustness_probe.py [--pack DIR] [--timeout 120] [--progress-stop 2] [--only TEXT]
                                       [--json FILE] [--compare BEFORE.json]

Each case is an API graph around VAE Decode (360 / Tiled), VAE Encode (Tiled), SyncDiffusion Model Patch,
SyncDiffusion Coherence or the SyncDiffusion KSampler / Sampler inputs added since the first hardening (builders in
tests/robustness_graphs.py). One server runs them all on the CPU with SDL3D_MEMORY_LIMIT_MB=3072 (as the API suite),
a watchdog kills it when its RSS passes --rss-kill-gib (a "server death"; it is restarted for the next case), and
the websocket's progress messages tell a long run from a hang: a case still running after --timeout seconds with
no progress message is a hang; with --progress-stop N, a case is interrupted as soon as it has shown N progress
messages (or logged the warning it expects), which is what "running, with progress" means in the table.
--pack runs another checkout of the pack (e.g. `git archive fce621f` unpacked) for the "before" column;
--compare prints a before/after table from a saved --json run. Standard library only, plus the server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
from headless import PACK_DIR_NAME, ComfyClient, ComfyServer, EventStream, prepare_base  # noqa: E402
from robustness_probe_cases import CASES, Case  # noqa: E402

from comfy_runner.local import offline_models_tree  # noqa: E402

MEMORY_LIMIT_MB = 3072


# ---------------------------------------------------------------- server with an RSS watchdog


class ProbeServer:
    """One headless ComfyUI for the probe; restarted after a death. `peak` = highest RSS seen since reset_peak()."""

    def __init__(self, comfyui: Path, fixtures: Path, pack: Path, work: Path, kill_gib: float):
        self.comfyui, self.pack, self.kill_gib = comfyui, pack, kill_gib
        self.base = work / "base"
        self.models = offline_models_tree(fixtures, work / "models_offline")
        self.torch_home = work / "torch_home"
        self.torch_home.mkdir(exist_ok=True)
        self.server: ComfyServer | None = None
        self.peak, self.killed = 0.0, False

    def start(self) -> None:
        prepare_base(self.base, self.models)
        link = self.base / "custom_nodes" / PACK_DIR_NAME
        if link.resolve() != self.pack.resolve():
            link.unlink()
            link.symlink_to(self.pack.resolve(), target_is_directory=True)
        saved = {k: os.environ.get(k) for k in ("SDL3D_MEMORY_LIMIT_MB", "TORCH_HOME")}
        os.environ.update(SDL3D_MEMORY_LIMIT_MB=str(MEMORY_LIMIT_MB), TORCH_HOME=str(self.torch_home))
        try:
            self.server = ComfyServer(self.comfyui, self.base).start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        self.client = ComfyClient(self.server.url)
        self.events = EventStream(self.server.url, self.client.client_id)
        self.killed = False
        threading.Thread(target=self._watch, args=(self.server.process,), daemon=True).start()

    def rss_gib(self) -> float:
        try:
            status = Path(f"/proc/{self.server.process.pid}/status").read_text().splitlines()
            return int(next(x.split()[1] for x in status if x.startswith("VmRSS"))) / 2**20
        except (AttributeError, OSError, StopIteration, ValueError):
            return 0.0

    def _watch(self, process) -> None:
        while process.poll() is None:
            rss = self.rss_gib()
            self.peak = max(self.peak, rss)
            if rss > self.kill_gib:
                self.killed = True
                process.kill()
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.server is not None and self.server.process.poll() is None

    def log(self) -> str:
        return self.server.log_text() if self.server else ""

    def stop(self) -> None:
        if self.server:
            self.events.close()
            self.server.stop()


# ---------------------------------------------------------------- one case


@dataclass
class Row:
    id: str
    expect: str
    outcome: str  # 400 | refused | success | progress | hang | death | late | wrong
    seconds: float
    message_ok: bool
    peak_gib: float
    text: str


def _post(client: ComfyClient, graph: dict) -> tuple[int, dict]:
    body = json.dumps({"prompt": graph, "client_id": client.client_id}).encode()
    request = urllib.request.Request(client.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _names(text: str, case: Case, node_names: dict) -> bool:
    """The message names the node (display name), the input, its value (' = ') and a fix."""
    node = node_names.get(case.node_type, case.node_type)
    return node in text and f"input '{case.input}' = " in text and "Fix:" in text


def _history(client: ComfyClient, prompt_id: str) -> dict | None:
    entry = client.get_json(f"/history/{prompt_id}").get(prompt_id)
    if entry and entry.get("status", {}).get("completed") is not None:
        status = entry["status"]
        if status.get("completed") or status.get("status_str") == "error":
            return entry
    return None


def _error_text(entry: dict) -> tuple[str, str]:
    for kind, data in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            return data.get("node_id", ""), f"{data.get('exception_message')}"
        if kind == "execution_interrupted":
            return data.get("node_id", ""), "interrupted"
    return "", ""


def run_case(srv: ProbeServer, case: Case, graph: dict, timeout: float, progress_stop: int, names: dict) -> Row:
    hidden = srv.models / case.hide if case.hide else None
    if hidden is not None and (hidden.is_symlink() or hidden.exists()):
        hidden.rename(hidden.with_name(hidden.name + ".hidden"))
    srv.peak, start, log_start = srv.rss_gib(), time.monotonic(), len(srv.log())
    try:
        return _run(srv, case, graph, timeout, progress_stop, names, start, log_start)
    finally:
        if hidden is not None and hidden.with_name(hidden.name + ".hidden").exists():
            hidden.with_name(hidden.name + ".hidden").rename(hidden)


def _run(srv, case, graph, timeout, progress_stop, names, start, log_start) -> Row:
    def row(outcome: str, ok: bool, text: str) -> Row:
        return Row(case.id, case.expect, outcome, round(time.monotonic() - start, 1), ok, round(srv.peak, 2), text)

    try:
        status, answer = _post(srv.client, graph)
    except (urllib.error.URLError, ConnectionError, OSError):
        return row("death", False, "the server did not answer")
    if status == 400:
        errors = answer.get("node_errors", {}).get("t", {}).get("errors", [])
        ours = [
            e for e in errors if e["type"] == "custom_validation_failed" and f"input '{case.input}'" in e["details"]
        ]
        comfy = [e for e in errors if e["type"] != "custom_validation_failed"]
        comfy = [e for e in comfy if e.get("extra_info", {}).get("input_name") == case.input]
        text = " | ".join(f"{e.get('message')}: {e.get('details')}" for e in (ours or comfy or errors))
        ok = bool(ours and _names(ours[0]["details"], case, names)) or bool(comfy)  # ComfyUI's own: type/min/max
        return row("400", ok, text or json.dumps(answer)[:300])
    prompt_id = answer["prompt_id"]
    stopped_at = None
    while True:
        time.sleep(0.2)
        if not srv.alive():
            return row("death", False, f"server died{' (RSS watchdog)' if srv.killed else ''}")
        try:
            entry = _history(srv.client, prompt_id)
        except (urllib.error.URLError, ConnectionError, OSError):
            continue
        if entry is not None:
            node_id, text = _error_text(entry)
            if stopped_at is not None:
                shown = srv.events.progress(prompt_id, None)
                logged = bool(case.log) and case.log in srv.log()[log_start:]
                outcome = "progress" if shown or logged else "hang"
                note = f"{shown} progress messages; {'warning logged; ' if logged else ''}"
                return row(
                    outcome,
                    logged or bool(shown),
                    f"{note}stopped {time.monotonic() - stopped_at:.1f} s after the interrupt",
                )
            if not text:
                return row("success", True, "ran to the end")
            return row("refused" if node_id == case.at else "refused-elsewhere", _names(text, case, names), text[:400])
        elapsed = time.monotonic() - start
        logged = bool(case.log) and case.log in srv.log()[log_start:]
        shown = srv.events.progress(prompt_id, None)
        ready = progress_stop and elapsed > (5 if case.expect == "progress" else 30)
        ready = ready and (shown >= progress_stop or (logged and not case.shows_progress))
        if stopped_at is None and (elapsed > timeout or ready):
            srv.client.interrupt()
            stopped_at = time.monotonic()
        if stopped_at is not None and time.monotonic() - stopped_at > 120:
            srv.server.process.kill()
            return row("hang", False, "did not stop within 120 s of the interrupt (server killed)")


# ---------------------------------------------------------------- main


def summary(rows: list[Row]) -> dict:
    late = [r for r in rows if r.expect == "400" and r.outcome in ("refused", "refused-elsewhere")]
    refusals = [r for r in rows if r.outcome in ("400", "refused", "refused-elsewhere")]
    return {
        "cases": len(rows),
        "server deaths": sum(r.outcome == "death" for r in rows),
        "hangs (no progress)": sum(r.outcome == "hang" for r in rows),
        "late refusals of queue-time rules": len(late),
        "refusals not naming node/input/value/fix": sum(not r.message_ok for r in refusals),
        "clean refusals": sum(r.message_ok for r in refusals) - len(late),
        "ran (success or progress)": sum(r.outcome in ("success", "progress") for r in rows),
        "peak RSS (GiB)": max((r.peak_gib for r in rows), default=0.0),
    }


def _cell(r: Row) -> str:
    mark = "" if r.message_ok or r.outcome in ("death", "hang") else " (message lacks node/input/value/fix)"
    return f"{r.outcome}{mark}, {r.seconds:.0f} s, {r.peak_gib:.1f} GiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=REPO_ROOT, help="the pack checkout to run (default: this one)")
    ap.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache/ComfyUI")))
    ap.add_argument(
        "--fixtures", type=Path, default=Path(os.environ.get("SDL3D_FIXTURES", REPO_ROOT / ".cache/fixtures"))
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds before a running case is interrupted")
    ap.add_argument(
        "--progress-stop", type=int, default=2, help="interrupt after this many progress messages (0: never)"
    )
    ap.add_argument("--rss-kill-gib", type=float, default=6.0, help="kill the server past this RSS (a death)")
    ap.add_argument("--only", default="", help="run the cases whose id contains this text")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument("--compare", type=Path, help="a --json file of an earlier run: print before/after")
    args = ap.parse_args(argv)

    cases = [c for c in CASES if args.only in c.id]
    work = Path(tempfile.mkdtemp(prefix="sdl3d_probe_"))
    srv = ProbeServer(args.comfyui, args.fixtures / "models", args.pack, work, args.rss_kill_gib)
    srv.start()
    names = {k: v.get("display_name") or k for k, v in srv.client.object_info().items()}
    rows = []
    try:
        for case in cases:
            graph = case.build()
            case.node_type = graph["t"]["class_type"]
            if not srv.alive():
                srv.stop()
                srv.start()
            r = run_case(srv, case, graph, args.timeout, args.progress_stop, names)
            rows.append(r)
            print(f"{r.id:38} {r.expect:9} {_cell(r)} | {r.text[:150]}", flush=True)
    finally:
        srv.stop()
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    after = summary(rows)
    if args.compare:
        before_rows = {r["id"]: Row(**r) for r in json.loads(args.compare.read_text())}
        before = summary(list(before_rows.values()))
        print("\n| | before | after |\n|---|---|---|")
        for key in after:
            print(f"| {key} | {before.get(key)} | {after[key]} |")
        print("\n| case | expected | before | after |\n|---|---|---|---|")
        for r in rows:
            b = before_rows.get(r.id)
            print(f"| {r.id} | {r.expect} | {_cell(b) if b else '-'} | {_cell(r)} |")
    else:
        print("\n" + "\n".join(f"{k}: {v}" for k, v in after.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
