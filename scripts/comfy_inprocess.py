"""Real ComfyUI imported in-process with this pack loaded the way ComfyUI loads a custom node package.

Used by the benchmark scripts: `load_pack(comfy_dir, cpu, model_dirs)` puts ComfyUI first on sys.path (never the
repository root: ComfyUI has its own `nodes` module), registers extra model folders, imports the pack as the
package `syncdiffusion_ldm3d` and runs its entry point. Returns the pack module.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_MODULE = "syncdiffusion_ldm3d"


def load_pack(comfy_dir: Path, cpu: bool, model_dirs: list[Path] = ()):
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
    sys.path.insert(0, str(Path(comfy_dir).resolve()))
    from comfy.cli_args import args

    args.cpu = cpu
    import folder_paths

    for models in model_dirs:
        for folder in sorted(p for p in Path(models).iterdir() if p.is_dir()):
            folder_paths.add_model_folder_path(folder.name, str(folder), is_default=True)
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACK_MODULE, REPO_ROOT / "__init__.py",
                                                      submodule_search_locations=[str(REPO_ROOT)])
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = pack
        spec.loader.exec_module(pack)
    pack = sys.modules[PACK_MODULE]
    asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return pack
