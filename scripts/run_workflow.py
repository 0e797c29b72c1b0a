"""Run a shipped API-format workflow headless and save its outputs (the README's main job).

    python scripts/run_workflow.py [--workflow workflows/<name>.api.json] [--url http://host:port]
                                   [--comfyui /path/to/ComfyUI] [--offline-fixtures] [--output-dir DIR]

Without --url it starts ComfyUI itself (CPU, headless) with this pack linked in and the models of that
ComfyUI (COMFYUI_DIR or the one scripts/bootstrap.sh installed). Every model the workflow names is checked
first: a missing one is reported with the file to put where (workflows/models/expected_models.json says where each comes
from). --offline-fixtures serves the random-weight fixtures under the names the workflow expects, so the
whole graph executes where no weights can be downloaded (outputs are noise, the pipeline is real); loaders whose
models have no tiny stand-in are swapped as expected_models.json's `offline_substitutes` say (Flux's T5-XXL).
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

DEFAULT_WORKFLOW = REPO_ROOT / "workflows" / "panorama_360_stereo.api.json"
MANIFEST = REPO_ROOT / "workflows" / "models" / "expected_models.json"


def load_manifest() -> list[dict]:
    return json.loads(MANIFEST.read_text())["models"] if MANIFEST.exists() else []


def offline_prompt(prompt: dict) -> dict:
    """The graph --offline-fixtures runs: a copy with the manifest's `offline_substitutes` applied (a loader whose
    model has no tiny stand-in, e.g. Flux's DualCLIPLoader with T5-XXL, becomes a loader of a fixture that fits the
    fixture models). "$name" in a replacement input takes the replaced node's input `name`. Links keep their slots."""
    rules = json.loads(MANIFEST.read_text()).get("offline_substitutes", []) if MANIFEST.exists() else []
    out = {}
    for node_id, node in prompt.items():
        node = {**node, "inputs": dict(node["inputs"])}
        for rule in rules:
            if node["class_type"] == rule["class_type"] and all(node["inputs"].get(k) == v
                                                                 for k, v in rule.get("when", {}).items()):
                new = rule["replace_with"]
                inputs = {k: (node["inputs"][v[1:]] if isinstance(v, str) and v.startswith("$") else v)
                          for k, v in new["inputs"].items()}
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


def missing_inputs(prompt: dict, object_info: dict, models_hint: str) -> list[str]:
    """Combo values (model files, input images) the server does not offer, each with what to do."""
    by_name = {(e["folder"], e["name"]): e for e in load_manifest()}
    problems = []
    for node_id, node in prompt.items():
        info = object_info.get(node["class_type"])
        if info is None:
            problems.append(f"node {node_id}: class '{node['class_type']}' is not installed on the server")
            continue
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, value in node["inputs"].items():
            spec = specs.get(name)
            if not isinstance(value, str) or not spec or not isinstance(spec[0], list) or value in spec[0]:
                continue
            entry = next((e for (folder, file), e in by_name.items() if file == value), None)
            if entry:
                problems.append(f"node {node_id} ({node['class_type']}) needs '{value}': put {entry['source']} at "
                                f"{models_hint}/{entry['folder']}/{entry['name']}")
            else:
                problems.append(f"node {node_id} ({node['class_type']}): input '{name}' = '{value}' is not among "
                                f"the server's choices ({', '.join(map(str, spec[0][:5]))}...)")
    return problems


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
    if ns.offline_fixtures:
        prompt = offline_prompt(prompt)
    ui_path = ns.workflow.with_name(ns.workflow.name.replace(".api.json", ".json"))
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
        problems = missing_inputs(prompt, client.object_info(), models_hint)
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
