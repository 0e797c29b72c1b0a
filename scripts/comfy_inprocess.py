"""Real ComfyUI imported in-process with this pack loaded the way ComfyUI loads a custom node package.

The one loader shared by the tests (tests/conftest.py), the benchmarks and the workflow generator:
- `put_comfy_first(comfy_dir, cpu)`: ComfyUI first on sys.path (never the repository root: ComfyUI has its own
  `nodes` module), CPU mode if asked;
- `add_model_folders(models_dir)`: every sub-folder of `models_dir` registered as a ComfyUI model folder;
- `init_stock_nodes()`: ComfyUI's extra (comfy_extras) nodes, once;
- `import_pack()` / `pack_node_classes(pack)`: the pack as the package `syncdiffusion_ldm3d`, and its node classes
  from its entry point;
- `load_pack(comfy_dir, cpu, model_dirs)`: all of the above in order; returns the pack module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "syncdiffusion_ldm3d"


def run_coroutine(coroutine: Coroutine):
    """`asyncio.run`, also from a thread whose event loop is already running (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result: dict = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as error:  # re-raised in the caller's thread
            result["error"] = error

    worker = threading.Thread(target=target)
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def put_comfy_first(comfy_dir: Path, cpu: bool = True) -> Path:
    root = Path(comfy_dir).resolve()
    if not (root / "main.py").exists():
        raise FileNotFoundError(f"ComfyUI not found at {root}: run scripts/bootstrap.sh or set COMFYUI_DIR")
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = cpu
    return root


def add_model_folders(models_dir: Path) -> None:
    import folder_paths

    for folder in sorted(p for p in Path(models_dir).iterdir() if p.is_dir()):
        folder_paths.add_model_folder_path(folder.name, str(folder), is_default=True)


def init_stock_nodes() -> None:
    import nodes

    if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
        run_coroutine(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))


def import_pack() -> ModuleType:
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
        )
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = pack
        spec.loader.exec_module(pack)
    return sys.modules[PACK_MODULE]


def pack_node_classes(pack: ModuleType) -> list[type]:
    extension = run_coroutine(pack.comfy_entrypoint())
    return list(run_coroutine(extension.get_node_list()))


def load_pack(comfy_dir: Path, cpu: bool, model_dirs: Iterable[Path] = ()) -> ModuleType:
    put_comfy_first(comfy_dir, cpu)
    for models in model_dirs:
        add_model_folders(models)
    pack = import_pack()
    pack_node_classes(pack)
    return pack
