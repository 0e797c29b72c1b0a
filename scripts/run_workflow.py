"""Run a shipped API-format workflow headless and save its outputs (the README's main job).

    python scripts/run_workflow.py [--workflow workflows/api/<name>.api.json] [--url http://host:port]
                                   [--comfyui /path/to/ComfyUI] [--offline-fixtures] [--output-dir DIR]

Without --url it starts ComfyUI itself (CPU, headless) with this pack linked in and the models of that
ComfyUI (COMFYUI_DIR or the one scripts/bootstrap.sh installed). Every model the workflow names is checked
first: a missing one is reported with the file to put where (workflows/models/expected_models.json says where each comes
from). --offline-fixtures serves the random-weight fixtures under the names the workflow expects, so the
whole graph executes where no weights can be downloaded (outputs are noise, the pipeline is real).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headless import REPO_ROOT, ComfyClient, ComfyServer, WorkflowError, output_files, prepare_base  # noqa: E402

DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "api" / "panorama_360_stereo.api.json"
# LPIPS backbone file each net needs (sync_core.perceptual.BACKBONE_FILES); the SyncDiffusion samplers default to vgg
LPIPS_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
SYNC_SAMPLERS = ("SDL3D_SyncDiffusionKSampler", "SDL3D_SyncDiffusionSampler")
MANIFEST = REPO_ROOT / "workflows" / "models" / "expected_models.json"


def load_manifest() -> list[dict]:
    return json.loads(MANIFEST.read_text())["models"] if MANIFEST.exists() else []


def offline_models_tree(fixtures_models: Path, dest: Path) -> Path:
    """A models/ folder holding every fixture plus links named as the workflows expect (expected_models.json)."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in fixtures_models.iterdir():
        if folder.is_dir():
            (dest / folder.name).mkdir(exist_ok=True)
            for item in folder.iterdir():
                _link(dest / folder.name / item.name, item)
    for entry in load_manifest():
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


def _combo_options(spec) -> list | None:
    """Choices of a combo input spec: old style [[...], {...}] or V3 style ["COMBO", {"options": [...]}]."""
    if not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return spec[1].get("options")
    return None


def needed_lpips_files(prompt: dict) -> set[str]:
    """LPIPS backbone files the graph loads: each LPIPS Loader's net, vgg for a sync sampler without one."""
    files = {LPIPS_FILES.get(n["inputs"].get("net"), "") for n in prompt.values()
             if n["class_type"] == "SDL3D_LPIPSLoader"}
    for node in prompt.values():
        uses_default = "lpips" not in node["inputs"] and node["inputs"].get("sync_weight", 1)
        if node["class_type"] in SYNC_SAMPLERS and uses_default:
            files.add(LPIPS_FILES["vgg"])
    return files - {""}


def missing_inputs(prompt: dict, object_info: dict, models_hint: str,
                   lpips_files: list[str] | None = None) -> list[str]:
    """Combo values (model files, input images) the server does not offer, each with what to do.

    With `lpips_files` (what the server's models/lpips holds), the LPIPS backbones the graph needs are checked too.
    """
    by_name = {(e["folder"], e["name"]): e for e in load_manifest()}
    problems = []
    if lpips_files is not None:
        for file in sorted(needed_lpips_files(prompt) - set(lpips_files)):
            entry = by_name.get(("lpips", file))
            problems.append(f"LPIPS needs '{file}': put {entry['source'] if entry else file} at "
                            f"{models_hint}/lpips/{file}")
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: class '{node['class_type']}' is not installed on the server")
            continue
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            options = _combo_options(specs.get(name))
            if not isinstance(value, str) or options is None or value in options:
                continue
            entry = next((e for (folder, file), e in by_name.items() if file == value), None)
            if entry:
                problems.append(f"node {node_id} ({node['class_type']}) needs '{value}': put {entry['source']} at "
                                f"{models_hint}/{entry['folder']}/{entry['name']}")
            else:
                problems.append(f"node {node_id} ({node['class_type']}): input '{name}' = '{value}' is not among "
                                f"the server's choices ({', '.join(map(str, options[:5]))}...)")
    return problems


def lpips_files(client: ComfyClient, server: ComfyServer | None) -> list[str] | None:
    """LPIPS backbones the server can load: its models/lpips, plus the torch hub cache when we started it."""
    try:
        files = list(client.get_json("/models/lpips"))
    except (OSError, ValueError):  # a server without the route (HTTPError is an OSError): skip this check
        return None
    if server is not None:
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        files += [p.name for p in hub.glob("*.pth")] if hub.is_dir() else []
    return files


def save_outputs(client: ComfyClient, entry: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    for info in output_files(entry):
        path = out_dir / Path(info["filename"]).name
        path.write_bytes(client.download(info))
        saved.append(path)
    return saved


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow (.api.json)")
    parser.add_argument("--url", help="a running ComfyUI (with this pack installed) instead of starting one")
    parser.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache/ComfyUI")),
                        help="ComfyUI folder whose models/ are used (default: COMFYUI_DIR or the bootstrapped one)")
    parser.add_argument("--offline-fixtures", action="store_true",
                        help="run on the random-weight fixtures under the expected model names (no downloads)")
    parser.add_argument("--fixtures", type=Path, default=Path(os.environ.get("SDL3D_FIXTURES", REPO_ROOT / ".cache/fixtures")))
    parser.add_argument("--output-dir", type=Path, default=None, help="where outputs are saved (printed at the end)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the workflow")
    ns = parser.parse_args(argv)

    prompt = json.loads(ns.workflow.read_text())
    ui_name = ns.workflow.name.replace(".api.json", ".json")  # UI twins live in workflows/, API ones in workflows/api/
    ui_path = next((p for p in (ns.workflow.with_name(ui_name), ns.workflow.parent.parent / ui_name) if p.exists()),
                   ns.workflow.with_name(ui_name))
    workflow_ui = json.loads(ui_path.read_text()) if ui_path.exists() else None
    out_dir = ns.output_dir or REPO_ROOT / ".cache" / "outputs" / time.strftime("%Y%m%d-%H%M%S")

    server = None
    if ns.url:
        client = ComfyClient(ns.url)
        models_hint = "<your ComfyUI>/models"
    else:
        comfyui = ns.comfyui.resolve()
        base = REPO_ROOT / ".cache" / ("run_offline" if ns.offline_fixtures else "run")
        if ns.offline_fixtures:
            models = offline_models_tree(ns.fixtures.resolve() / "models", base / "models_offline")
        else:
            models = comfyui / "models"
        prepare_base(base, models, REPO_ROOT / "workflows" / "inputs")
        models_hint = str(models)
        print(f"starting ComfyUI from {comfyui} (models: {models}) ...", flush=True)
        server = ComfyServer(comfyui, base).start()
        if server.pack_import_errors():
            server.stop()
            print("the pack failed to load:\n" + "\n".join(server.pack_import_errors()), file=sys.stderr)
            return 2
        client = ComfyClient(server.url)
    try:
        problems = missing_inputs(prompt, client.object_info(), models_hint, lpips_files(client, server))
        if problems:
            print("cannot run the workflow:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 3
        print(f"running {ns.workflow.name} ...", flush=True)
        started = time.monotonic()
        entry = client.run(prompt, workflow_ui, timeout=ns.timeout)
        saved = save_outputs(client, entry, out_dir)
        print(f"done in {time.monotonic() - started:.1f} s; {len(saved)} files in {out_dir}")
        for path in saved:
            print(f"  {path.name}")
        return 0
    except WorkflowError as err:
        print(f"workflow failed: {err}", file=sys.stderr)
        if server:
            print(server.log_tail(), file=sys.stderr)
        return 1
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
