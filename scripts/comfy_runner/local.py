"""ComfyUI servers started here (when no --url is given), the offline fixture models, and the model check.

Each local server gets its own base directory (output counters never race) sharing one models/ folder, and is
stopped by its PID when the run ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1]
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
from headless import REPO_ROOT, ComfyServer, prepare_base  # noqa: E402

EXPECTED_MODELS = REPO_ROOT / "workflows" / "models" / "expected_models.json"


def expected_models() -> list[dict]:
    return json.loads(EXPECTED_MODELS.read_text())["models"] if EXPECTED_MODELS.exists() else []


def offline_prompt(prompt: dict) -> dict:
    """The graph --offline-fixtures runs: a copy with the manifest's `offline_substitutes` applied (a loader whose
    model has no tiny stand-in, e.g. Flux's DualCLIPLoader with T5-XXL, becomes a loader of a fixture that fits the
    fixture models). "$name" in a replacement input takes the replaced node's input `name`. Links keep their slots."""
    rules = json.loads(EXPECTED_MODELS.read_text()).get("offline_substitutes", []) if EXPECTED_MODELS.exists() else []
    out = {}
    for node_id, node in prompt.items():
        node = {**node, "inputs": dict(node["inputs"])}
        for rule in rules:
            if node["class_type"] == rule["class_type"] and all(
                node["inputs"].get(k) == v for k, v in rule.get("when", {}).items()
            ):
                new = rule["replace_with"]
                inputs = {
                    k: (node["inputs"][v[1:]] if isinstance(v, str) and v.startswith("$") else v)
                    for k, v in new["inputs"].items()
                }
                node = {**node, "class_type": new["class_type"], "inputs": inputs}
                break
        out[node_id] = node
    return out


def offline_models_tree(fixtures_models: Path, dest: Path) -> Path:
    """A models/ folder holding every fixture plus links named as the workflows expect (expected_models.json)."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in fixtures_models.iterdir():
        if folder.is_dir():
            (dest / folder.name).mkdir(exist_ok=True)
            for item in folder.iterdir():
                _link(dest / folder.name / item.name, item)
    for entry in expected_models():
        source = fixtures_models / entry["fixture"]
        if not source.exists():
            raise SystemExit(f"fixture {source} is missing: run scripts/bootstrap.sh first")
        (dest / entry["folder"]).mkdir(exist_ok=True)
        _link(dest / entry["folder"] / entry["name"], source)
    return dest


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


LPIPS_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}  # sync_core.perceptual
SYNC_SAMPLERS = ("SDL3D_SyncDiffusionKSampler", "SDL3D_SyncDiffusionSampler")


def needed_lpips_files(prompt: dict) -> set[str]:
    """LPIPS backbone files the graph loads: each LPIPS Loader's net, vgg for a sync sampler without one."""
    files = {
        LPIPS_FILES.get(n["inputs"].get("net"), "") for n in prompt.values() if n["class_type"] == "SDL3D_LPIPSLoader"
    }
    for node in prompt.values():
        uses_default = "lpips" not in node["inputs"] and node["inputs"].get("sync_weight", 1)
        if node["class_type"] in SYNC_SAMPLERS and uses_default:
            files.add(LPIPS_FILES["vgg"])
    return files - {""}


def missing_inputs(
    prompt: dict, object_info: dict, models_hint: str, lpips_files: list[str] | None = None
) -> list[str]:
    """Combo values (model files, input images) the server does not offer, each with what to do; with
    `lpips_files` (what the server's models/lpips holds) the LPIPS backbones the graph needs are checked too."""
    by_name = {e["name"]: e for e in expected_models()}
    problems = []
    if lpips_files is not None:
        for file in sorted(needed_lpips_files(prompt) - set(lpips_files)):
            entry = by_name.get(file)
            problems.append(
                f"LPIPS needs '{file}': put {entry['source'] if entry else file} at {models_hint}/lpips/{file}"
            )
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: class '{node['class_type']}' is not installed on the server")
            continue
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            spec = specs.get(name)
            choices = (
                spec[0]
                if spec and isinstance(spec[0], list)
                else (spec[1].get("options") if spec and spec[0] == "COMBO" and len(spec) > 1 else None)
            )
            if not isinstance(value, str) or not choices or value in choices:
                continue
            entry = by_name.get(value)
            if entry:
                problems.append(
                    f"node {node_id} ({node['class_type']}) needs '{value}': put {entry['source']} at "
                    f"{models_hint}/{entry['folder']}/{entry['name']}"
                )
            else:
                problems.append(
                    f"node {node_id} ({node['class_type']}): input '{name}' = '{value}' is not among "
                    f"the server's choices ({', '.join(map(str, choices[:5]))}...)"
                )
    return problems


def cuda_devices() -> int:
    """How many CUDA devices torch sees here (0 without torch or CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def start_local_servers(
    count: int, comfyui: Path, offline: bool, fixtures: Path, say, cpu: bool = False
) -> list[ComfyServer]:
    """Start `count` headless servers with this pack linked in, spread over the CUDA devices torch sees (on the
    CPU when there are none, or with `cpu`); raise RuntimeError naming what failed."""
    root = REPO_ROOT / ".cache" / ("run_offline" if offline else "run")
    models = offline_models_tree(fixtures / "models", root / "models_offline") if offline else comfyui / "models"
    gpus = 0 if cpu else cuda_devices()
    servers = []
    try:
        for index in range(count):
            base = prepare_base(root / f"server-{index}", models, REPO_ROOT / "workflows" / "inputs")
            device = ("--cuda-device", str(index % gpus)) if gpus else ()
            servers.append(ComfyServer(comfyui, base, extra_args=device, cpu=not gpus))
        where = f"{gpus} GPU(s)" if gpus else "the CPU"
        say(f"starting {count} ComfyUI server(s) on {where} from {comfyui} (models: {models}) ...")
        for server in servers:
            server.start()
            errors = server.pack_import_errors()
            if errors:
                raise RuntimeError("the pack failed to load:\n" + "\n".join(errors))
        return servers
    except BaseException:
        for server in servers:
            server.stop()
        raise
