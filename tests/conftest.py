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

# The repo root must never shadow ComfyUI's own `nodes` module (python -m pytest puts the cwd first).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO_ROOT]
sys.path.insert(0, str(REPO_ROOT / "scripts"))


def _import_cores_from_the_repository() -> None:
    """`sync_core` / `ldm3d_core` from this checkout (they are not installed: pyproject.toml), without putting the
    root, and with it the pack's `nodes/`, on sys.path."""
    for name in ("sync_core", "ldm3d_core"):
        if name in sys.modules:
            continue
        folder = REPO_ROOT / name
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_import_cores_from_the_repository()
import comfy_inprocess  # noqa: E402  (the one in-process loader, shared with the scripts)


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
    return comfy_inprocess.put_comfy_first(root, cpu=True)


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
    comfy_inprocess.add_model_folders(fixture_models)
    inputs_dir = REPO_ROOT / "workflows" / "inputs"
    if inputs_dir.is_dir():
        for item in inputs_dir.iterdir():
            shutil.copy(item, base / "input" / item.name)  # copies: the pack refuses links leaving input/

    comfy_inprocess.init_stock_nodes()
    import nodes

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
    module = comfy_inprocess.import_pack()
    node_classes = comfy_inprocess.pack_node_classes(module)
    package = comfy_inprocess.PACK_MODULE
    return SimpleNamespace(
        module=module,
        nodes=importlib.import_module(f"{package}.nodes"),
        node_module=lambda name: importlib.import_module(f"{package}.nodes.{name}"),
        node_classes=node_classes,
        by_id={cls.GET_SCHEMA().node_id: cls for cls in node_classes},
    )
