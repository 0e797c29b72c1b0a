"""Browser tests: the real ComfyUI frontend in headless Chromium (Playwright from pip, the system's Chromium).

A ComfyUI server (0.3.75, CPU, this pack linked in, random-weight fixtures under the expected model names) is
started once for the session and stopped by PID. It serves the frontend ComfyUI pins, or the build in
SDL3D_FRONTEND_ROOT (a folder with index.html, passed as --front-end-root); the version seen is printed at the end.
Without a Chromium (or Playwright) every browser test is skipped with a reason saying so. Screenshots go to
SDL3D_ARTIFACTS (default .cache/browser-artifacts/<time>), printed at the end of the run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from headless import PACK_DIR_NAME, ComfyServer, prepare_base  # noqa: E402

from comfy_runner.local import offline_models_tree  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
VIEWPORT = {"width": 1920, "height": 1080}  # the window make_ui_workflow.py lays graphs out for
FRONTEND_VERSIONS: set[str] = set()  # what the pages reported, printed at the end
ARTIFACTS = Path(
    os.environ.get("SDL3D_ARTIFACTS") or REPO_ROOT / ".cache" / "browser-artifacts" / time.strftime("%Y%m%d-%H%M%S")
)


def chromium_path() -> str | None:
    """SDL3D_CHROMIUM, else a chromium on PATH, else Debian's binary."""
    for candidate in (
        os.environ.get("SDL3D_CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/lib/chromium/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def skip_reason() -> str | None:
    if chromium_path() is None:
        return "browser tests skipped: no Chromium found (apt-get install chromium, or set SDL3D_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "browser tests skipped: Playwright is not installed (pip install playwright; no browser download needed)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = skip_reason()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    if FRONTEND_VERSIONS:
        terminalreporter.write_line(f"browser tests ran against frontend {', '.join(sorted(FRONTEND_VERSIONS))}")
    if ARTIFACTS.is_dir() and any(ARTIFACTS.iterdir()):
        terminalreporter.write_line(f"browser test screenshots: {ARTIFACTS}")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def ui_server(fixture_models, tmp_path_factory):
    base = tmp_path_factory.mktemp("browser_base")
    models = offline_models_tree(fixture_models, base / "models_offline")
    prepare_base(base, models, REPO_ROOT / "workflows" / "inputs")
    settings = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings))
    comfyui = Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache" / "ComfyUI")).resolve()
    extra: tuple[str, ...] = ()
    if frontend := os.environ.get("SDL3D_FRONTEND_ROOT"):  # another frontend build: a folder with index.html
        root = Path(frontend).resolve()
        if not (root / "index.html").is_file():
            raise pytest.UsageError(
                f"SDL3D_FRONTEND_ROOT={frontend!r} has no index.html (point it at a frontend "
                "package's static folder, e.g. <wheel>/comfyui_frontend_package/static)"
            )
        extra = ("--front-end-root", str(root))
    server = ComfyServer(comfyui, base, extra_args=extra)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def playwright():
    """Playwright's sync API keeps its event loop marked running while it is open, which breaks asyncio.run in the
    in-process tests: it lives only for this package, and the root conftest orders it last."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
    try:
        yield b
    finally:
        b.close()


class Page:
    """A fresh browser context on the app, with the page errors and the pack's console errors collected."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.add_init_script("localStorage.setItem('vueNodesBannerDismissed','true')")
        self.page = self.context.new_page()
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("console", self._console)
        self.page.goto(url + "/")
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && window.app.api", timeout=120_000
        )
        self.page.evaluate("""() => { window.__done = {}; for (const t of ['execution_success', 'execution_error'])
            app.api.addEventListener(t, e => { window.__done[e.detail.prompt_id] = t; }); }""")
        self.frontend_version = self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? 'unknown'")
        FRONTEND_VERSIONS.add(self.frontend_version)

    def _console(self, msg):
        if msg.type != "error" or "api.comfy.org" in msg.text:  # registry look-ups the page's CSP blocks
            return
        where = (msg.location or {}).get("url", "")
        if PACK_DIR_NAME in where or "viewer360" in where or "syncdiffusion" in msg.text or "SDL3D" in msg.text:
            self.console_errors.append(f"{msg.text} @ {where}")

    def pack_errors(self) -> list[str]:
        """Page errors and console errors that come from this pack (the frontend's own noise is ignored)."""
        mine = [e for e in self.page_errors if PACK_DIR_NAME in e or "viewer360" in e or "SDL3D" in e]
        return mine + self.console_errors

    def load(self, workflow: dict) -> None:
        self.page.evaluate("async (wf) => { await app.loadGraphData(wf); }", workflow)
        self.page.wait_for_timeout(300)

    def run(self, timeout_ms: int = 300_000) -> str:
        """Queue the open graph from the Run button, wait for it to finish; returns the prompt id."""
        with self.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as ans:
            self.page.get_by_role("button", name="Run", exact=True).click()
        assert ans.value.ok, ans.value.text()
        prompt_id = ans.value.json()["prompt_id"]
        self.page.wait_for_function("(pid) => pid in window.__done", arg=prompt_id, timeout=timeout_ms)
        assert self.page.evaluate("(pid) => window.__done[pid]", prompt_id) == "execution_success"
        return prompt_id

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def ui(browser, ui_server):
    page = Page(browser, ui_server.url)
    try:
        yield page
    finally:
        page.close()


@pytest.fixture(scope="package")
def browser_without_webgl(playwright):
    """A second Chromium with WebGL switched off (as where the GPU and its software fallback are blocklisted)."""
    args = [a for a in CHROMIUM_ARGS if "swiftshader" not in a] + ["--disable-webgl", "--disable-3d-apis"]
    b = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def ui_without_webgl(browser_without_webgl, ui_server):
    page = Page(browser_without_webgl, ui_server.url)
    try:
        yield page
    finally:
        page.close()
