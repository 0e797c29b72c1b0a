"""The cores are libraries too: importable outside ComfyUI, metadata consistent with requirements.txt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_cores_import_from_the_repository_in_a_clean_interpreter_without_comfyui():
    code = (
        "import sys, sync_core, ldm3d_core; "
        "assert 'comfy' not in sys.modules and 'folder_paths' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_install_adds_no_top_level_modules_and_no_diffusers_at_run_time():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert data["tool"]["setuptools"]["packages"] == [], "the cores must not be installed as top-level names"
    runtime = " ".join(data["project"]["dependencies"]) + (REPO_ROOT / "requirements.txt").read_text()
    test_extra = data["project"]["optional-dependencies"]["test"]
    assert "diffusers" not in runtime and any("diffusers" in d for d in test_extra)
    # and no node module imports it (the oracle adapter in sync_core imports it inside its function)
    for path in (REPO_ROOT / "nodes").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) diffusers", path.read_text(), re.M), path


def test_requirements_agree_with_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    name = lambda spec: re.split(r"[<>=!~ ]", spec, maxsplit=1)[0].lower()  # noqa: E731
    declared = {name(d) for d in project["dependencies"]} - {"torch"}
    listed = {
        name(line)
        for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert declared == listed
    assert not any("==" in d for d in project["dependencies"]), "keep user dependencies loose"


def test_registry_metadata():
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project, comfy = data["project"], data["tool"]["comfy"]
    assert project["name"] == "syncdiffusion-ldm3d"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    # PEP 639: an SPDX expression plus the file (the table form is deprecated by setuptools; the registry reads both)
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (REPO_ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["urls"]["Repository"]
    # a bounded range: the lowest and the highest ComfyUI the README's version table lists as tested
    assert comfy["requires-comfyui"] == ">=0.3.75,<0.34" and comfy["PublisherId"] and comfy["DisplayName"]
    readme = (REPO_ROOT / "README.md").read_text()
    assert "| 0.3.75 |" in readme and "| 0.33.0 |" in readme
    # the registry icon: a file in this repository (served from main), square, at most 400 px
    icon = REPO_ROOT / comfy["Icon"].split("/main/", 1)[1]
    with Image.open(icon) as picture:
        assert picture.size[0] == picture.size[1] <= 400, picture.size
    ignored = (REPO_ROOT / ".comfyignore").read_text().split()
    assert "tests/" in ignored and "scripts/" in ignored
