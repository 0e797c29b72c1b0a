"""Shared pytest fixtures: real ComfyUI in-process, the pack imported as ComfyUI would, model fixtures.

Paths (override with environment variables):
- COMFYUI_DIR: ComfyUI source tree (default .cache/ComfyUI, made by scripts/bootstrap.sh)
- SDL3D_FIXTURES: random-weight model cache (default .cache/fixtures)

Tiers: a test that uses ComfyUI or its model fixtures (the `comfy`, `pack` or `fixture_models` fixtures, directly
or through another fixture), runs the random-weight LPIPS / VGG backbones (`lpips_dir`: seconds to a minute each on
2 CPU cores), starts a server or drives a browser is marked `slow` here, at collection. The rest, the core tier, needs
only `pip install -e .[test]` and runs in seconds: `pytest -m "not slow"`. Without ComfyUI the tests that need it
skip and say why.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["model_fixtures"]  # model fixtures shared by the sampler test modules
CACHE_DIR = REPO_ROOT / ".cache"
PACK_MODULE = "syncdiffusion_ldm3d"

# The repo root must never shadow ComfyUI's own `nodes` module (python -m pytest puts the cwd first).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]


def comfyui_dir() -> Path:
    return Path(os.environ.get("COMFYUI_DIR", CACHE_DIR / "ComfyUI")).resolve()


def fixtures_dir() -> Path:
    return Path(os.environ.get("SDL3D_FIXTURES", CACHE_DIR / "fixtures")).resolve()


def _put_comfy_on_path() -> Path:
    root = comfyui_dir()
    if not (root / "main.py").exists():
        pytest.skip(
            f"needs ComfyUI (not found at {root}): run scripts/bootstrap.sh or set COMFYUI_DIR; "
            'the core tier runs without it: pytest -m "not slow"'
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = True
    return root


@pytest.fixture(scope="session")
def lpips_dir() -> Path:
    """Random-weight LPIPS backbones (torchvision file names) for the core tier; needs no ComfyUI."""
    spec = importlib.util.spec_from_file_location(
        "sdl3d_sync_fixtures", REPO_ROOT / "tests" / "fixtures" / "sync_fixtures.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    models = fixtures_dir() / "models"
    mod.build_sync_fixtures(models)
    return models / "lpips"


@pytest.fixture(scope="session")
def comfyui_root() -> Path:
    """The ComfyUI source tree the server tests start (COMFYUI_DIR or the bootstrapped one)."""
    return comfyui_dir()


@pytest.fixture(scope="session")
def fixture_models() -> Path:
    """The fixture models tree (checkpoints/, vae_approx/, lpips/, ldm3d/ ...), built on first use."""
    _put_comfy_on_path()
    spec = importlib.util.spec_from_file_location("sdl3d_fixture_build", REPO_ROOT / "tests" / "fixtures" / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build.build_all(comfyui_dir(), fixtures_dir())


@pytest.fixture(scope="session")
def comfy(fixture_models, tmp_path_factory):
    """Real ComfyUI importable in-process (CPU), model folders pointing at the fixtures, temp input/output."""
    root = _put_comfy_on_path()
    import folder_paths

    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("input", "output", "temp"):
        (base / sub).mkdir()
    folder_paths.set_input_directory(str(base / "input"))
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.set_temp_directory(str(base / "temp"))
    for folder in sorted(p for p in fixture_models.iterdir() if p.is_dir()):
        folder_paths.add_model_folder_path(folder.name, str(folder), is_default=True)
    inputs_dir = REPO_ROOT / "workflows" / "inputs"
    if inputs_dir.is_dir():
        for item in inputs_dir.iterdir():
            shutil.copy(item, base / "input" / item.name)  # copies: the pack refuses links leaving input/

    import nodes

    if "SamplerCustomAdvanced" not in nodes.NODE_CLASS_MAPPINGS:
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return SimpleNamespace(root=root, base=base, models=fixture_models, folder_paths=folder_paths, nodes=nodes)


# ComfyUI and its model fixtures; the random-weight backbones (built here without ComfyUI, but slow to run)
SLOW_FIXTURES = {"comfy", "pack", "fixture_models", "lpips_dir"}


def pytest_collection_modifyitems(items):
    """Mark the tests that need ComfyUI `slow` (see the module docstring); browser tests run last: the in-process
    tests must not share the thread with Playwright's running loop."""
    browser_dir = REPO_ROOT / "tests" / "browser"
    for item in items:
        if (
            SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            or item.get_closest_marker("server")
            or item.get_closest_marker("browser")
        ):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: Path(str(item.fspath)).is_relative_to(browser_dir))


@pytest.fixture(scope="session")
def pack(comfy):
    """The pack imported as a package (like ComfyUI's loader does), with its model folders registered."""
    if PACK_MODULE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            PACK_MODULE, REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACK_MODULE] = module
        spec.loader.exec_module(module)
    module = sys.modules[PACK_MODULE]
    extension = asyncio.run(module.comfy_entrypoint())
    node_classes = asyncio.run(extension.get_node_list())
    return SimpleNamespace(
        module=module,
        nodes=importlib.import_module(f"{PACK_MODULE}.nodes"),
        node_module=lambda name: importlib.import_module(f"{PACK_MODULE}.nodes.{name}"),
        node_classes=node_classes,
        by_id={cls.GET_SCHEMA().node_id: cls for cls in node_classes},
    )
