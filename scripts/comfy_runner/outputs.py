"""Where a job's files go, how a finished job is recognised (``--resume``), and the JSONL manifest.

Layout under the output folder::

    manifest.jsonl              one record per job and run (appended; a resumed run adds its own records)
    <job id>/<subfolder>/<file> every file the server reported for the job, plus mesh companions
    <job id>/job.json           written last, only when every file is downloaded: files, sizes, sha256, the
                                graph's hash; --resume trusts a job whose job.json matches its graph and files

Files the server reports are those of every output node, of every kind (images, 16-bit PNGs, "3d" meshes, ...).
A mesh node may write companions it does not report (the OBJ's .mtl and texture, a PLY, ...): for each reported
mesh file the same stem with the other mesh extensions is asked for and kept when the server has it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
import uuid
from pathlib import Path

MESH_EXTENSIONS = (".glb", ".gltf", ".obj", ".mtl", ".ply", ".stl", ".png")
MARKER = "job.json"
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    cleaned = SAFE.sub("_", str(text)).strip("._")
    return cleaned[:120] or "job"


def graph_hash(prompt: dict) -> str:
    """A job's identity for --resume: the sha256 of its API graph (titles excluded)."""
    stripped = {nid: {"class_type": n["class_type"], "inputs": n["inputs"]} for nid, n in prompt.items()}
    return hashlib.sha256(json.dumps(stripped, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def reported_files(history_entry: dict, include_temp: bool) -> list[dict]:
    """Every file a finished prompt reported, with its node id and output kind ('images', '3d', ...)."""
    files = []
    for node_id, ui in (history_entry.get("outputs") or {}).items():
        for kind, values in ui.items():
            for item in values if isinstance(values, list) else []:
                if isinstance(item, dict) and item.get("filename"):
                    if item.get("type", "output") == "temp" and not include_temp:
                        continue
                    files.append({**item, "node": node_id, "kind": kind})
    return files


def missing_outputs(history_entry: dict) -> list[str]:
    """The job's expected outputs that a finished prompt did not produce, as 'node <id> (<class>)'.

    Expected outputs are the output nodes the server accepted and ran: the list ComfyUI keeps in the history
    entry (``prompt[4]``, its ``outputs_to_execute``; output nodes that failed validation were already refused
    by ``Server.submit``). One is produced when its history ``outputs`` entry holds at least one item (a file
    in any folder type, or a value such as text). Nodes that report nothing are missing, including nodes that
    save without reporting (CheckpointSave, VAESave, ...): the runner cannot collect those files. Entries
    without that list (not ComfyUI's history format) expect nothing.
    """
    queued = history_entry.get("prompt")
    if not isinstance(queued, (list, tuple)) or len(queued) < 5 or not isinstance(queued[4], list):
        return []
    graph = queued[2] if isinstance(queued[2], dict) else {}
    reported = history_entry.get("outputs") or {}
    missing = []
    for node_id in sorted(map(str, queued[4]), key=lambda n: (len(n), n)):
        ui = reported.get(node_id)
        if not isinstance(ui, dict) or not any(values for values in ui.values()):
            missing.append(f"node {node_id} ({(graph.get(node_id) or {}).get('class_type', '?')})")
    return missing


def companions(info: dict) -> list[dict]:
    """Same-stem files a mesh writer may have saved beside a reported mesh file."""
    name = Path(info["filename"])
    if name.suffix.lower() not in MESH_EXTENSIONS[:-1]:
        return []
    return [
        {**info, "filename": name.stem + ext, "companion_of": info["filename"]}
        for ext in MESH_EXTENSIONS
        if ext != name.suffix.lower()
    ]


def local_path(job_dir: Path, info: dict) -> Path:
    parts = [safe_name(p) for p in str(info.get("subfolder") or "").replace("\\", "/").split("/") if p]
    if info.get("type") == "temp":
        parts.insert(0, "temp")
    return job_dir.joinpath(*parts, safe_name(info["filename"]))


def completed(job_dir: Path, key: str) -> dict | None:
    """The job.json of a job whose files are all present with their recorded sha256 and the same graph."""
    marker = job_dir / MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("graph_sha256") != key:
        return None
    for item in record.get("outputs", []):
        path = job_dir / item["path"]
        if not path.is_file() or path.stat().st_size != item["bytes"] or file_sha256(path) != item["sha256"]:
            return None
    return record


def reset(job_dir: Path) -> None:
    """Clear what an unfinished earlier attempt left, so a job's folder only ever holds one run's files."""
    if job_dir.exists():
        shutil.rmtree(job_dir)


def write_marker(job_dir: Path, record: dict) -> None:
    tmp = job_dir / (MARKER + ".part")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(job_dir / MARKER)


class Manifest:
    """Append-only JSONL; every line is flushed at once so an interrupted run keeps what it finished."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps({"run": self.run_id, **record}) + "\n")
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def read_manifest(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
