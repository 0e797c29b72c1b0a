"""The 360 viewer's edge cases in the real frontend: which images get a viewer (decided from the graph, checked
against the shape), a browser without WebGL (plain previews, no viewer, no errors), and the mesh node's
"open in 3D preview" button (ComfyUI's own Preview3D node loads the saved model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MESH_WORKFLOW = REPO_ROOT / "workflows" / "stereo360_mesh.json"
SQUARE = "sdl3d_square_64.png"  # written into the server's input folder by the `square_input` fixture

# A small graph, loaded through the frontend's own API-format importer. Every image goes through a pack node to a
# Preview Image: a square anaglyph (like LDM3D's 512x512 pictures: not a 360 image at all), a top-bottom stereo pair
# (Pack Eyes says so; also square) and a 2:1 equirect anaglyph.
CASES_PROMPT = {
    "1": {"class_type": "LoadImage", "inputs": {"image": SQUARE}},
    "2": {
        "class_type": "SDL3D_StereoPack",
        "inputs": {"left": ["1", 0], "right": ["1", 0], "layout": "anaglyph", "swap_eyes": False},
    },
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}, "_meta": {"title": "square"}},
    "4": {"class_type": "LoadImage", "inputs": {"image": "stereo360_rgb.png"}},
    "5": {
        "class_type": "SDL3D_StereoPack",
        "inputs": {"left": ["4", 0], "right": ["4", 0], "layout": "top_bottom", "swap_eyes": True},
    },
    "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}, "_meta": {"title": "stereo"}},
    "7": {
        "class_type": "SDL3D_StereoPack",
        "inputs": {"left": ["4", 0], "right": ["4", 0], "layout": "anaglyph", "swap_eyes": False},
    },
    "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}, "_meta": {"title": "equirect"}},
}
PREVIEWS = {"3": "square", "6": "stereo", "8": "equirect"}

VIEWER_STATES = """(ids) => ids.map(id => { const n = app.graph.getNodeById(+id);
    const preview = (n.widgets || []).find(w => w.name === '$$canvas-image-preview');
    const panel = n.sdl3dViewer;
    return {id, state: n.sdl3dViewerState ?? null, imgs: (n.imgs || []).length,
            size: n.imgs && n.imgs[0] ? [n.imgs[0].naturalWidth, n.imgs[0].naturalHeight] : null,
            preview: preview ? !preview.hidden : null, panel: !!panel,
            panelInDom: !!document.querySelector(`.sdl3d-viewer360[data-node-id="${id}"]`),
            eyeSwitch: panel ? panel.eyeSelect.style.display !== 'none' : null}; })"""


@pytest.fixture(scope="module")
def square_input(ui_server):
    """A 64x64 RGB PNG in the server's input folder (before the page loads, so LoadImage lists it)."""
    from PIL import Image

    image = Image.new("RGB", (64, 64))
    image.putdata([(4 * x, 4 * y, 128) for y in range(64) for x in range(64)])
    image.save(ui_server.base / "input" / SQUARE)
    return SQUARE


def _run_cases(ui) -> list[dict]:
    ui.page.evaluate("async (p) => { await app.loadApiJson(p, 'sdl3d viewer cases'); }", CASES_PROMPT)
    ui.run()
    ids = list(PREVIEWS)
    ui.page.wait_for_function(
        f"(ids) => ({VIEWER_STATES})(ids).every(s => s.imgs > 0 && s.state !== null)", arg=ids, timeout=60_000
    )
    ui.page.wait_for_timeout(300)  # let the canvas draw the previews
    return ui.page.evaluate(VIEWER_STATES, ids)


def test_viewer_only_for_equirects_and_stereo_the_graph_declares(ui, square_input, artifacts):
    states = {PREVIEWS[s["id"]]: s for s in _run_cases(ui)}
    (artifacts / "viewer_cases.json").write_text(json.dumps(states, indent=1))
    square, stereo, equirect = states["square"], states["stereo"], states["equirect"]
    assert square["size"] == [64, 64] and stereo["size"] == [512, 512] and equirect["size"] == [512, 256], states
    # a square picture that no stereo output made: no viewer, no stereo switch, its plain preview stays
    assert square["state"] == "not-360" and not square["panel"] and not square["panelInDom"], square
    assert square["preview"] is not False, square
    # the same shape from Pack Eyes (top_bottom) is a stereo pair: viewer with its left/right/anaglyph switch
    assert stereo["state"] == "top_bottom" and stereo["panelInDom"] and stereo["eyeSwitch"], stereo
    # a 2:1 picture is an equirect: viewer, no eye switch
    assert equirect["state"] == "mono" and equirect["panelInDom"] and equirect["eyeSwitch"] is False, equirect
    eyes = ui.page.locator('.sdl3d-viewer360[data-node-id="6"] .sdl3d-viewer360-eye option').all_inner_texts()
    assert eyes == ["left", "right", "anaglyph"]
    assert ui.pack_errors() == []
    ui.page.screenshot(path=str(artifacts / "viewer_cases.png"))


def test_without_webgl_nodes_keep_their_plain_previews(ui_without_webgl, square_input, artifacts):
    ui = ui_without_webgl
    infos = []
    ui.page.on("console", lambda m: infos.append(m.text) if "WebGL is not available" in m.text else None)
    webgl = ui.page.evaluate("""() => { const c = document.createElement('canvas');
        return !!(c.getContext('webgl2') || c.getContext('webgl')); }""")
    assert webgl is False, "this browser still makes WebGL contexts: the test would prove nothing"
    states = _run_cases(ui)
    for s in states:
        assert s["state"] == "no-webgl", s
        assert s["imgs"] == 1 and not s["panel"] and not s["panelInDom"], s
        assert s["preview"] is not False, s  # the frontend's preview widget is not hidden
    assert ui.page.locator(".sdl3d-viewer360").count() == 0
    assert infos, "the pack did not say why the viewer is off"
    # the plain previews are drawn: the frontend's preview widget holds each node's image
    drawn = ui.page.evaluate(
        """(ids) => ids.map(id => { const n = app.graph.getNodeById(+id);
        return (n.widgets || []).some(w => w.name === '$$canvas-image-preview')
            || !!(n.imgs && n.imgs[0].complete); })""",
        list(PREVIEWS),
    )
    assert all(drawn), drawn
    assert ui.pack_errors() == [], ui.pack_errors()
    assert not [e for e in ui.page_errors if "WebGL" in e or "three" in e.lower()], ui.page_errors
    ui.page.screenshot(path=str(artifacts / "no_webgl_previews.png"))


def test_mesh_opens_in_comfyui_3d_preview(ui, artifacts):
    page = ui.page
    ui.load(json.loads(MESH_WORKFLOW.read_text()))
    prompt_id = ui.run()
    outputs = page.evaluate(
        "async (pid) => (await (await fetch('/api/history/' + pid)).json())[pid].outputs", prompt_id
    )
    mesh_id = next(i for i, o in outputs.items() if o.get("3d"))
    first = outputs[mesh_id]["3d"][0]
    model_file = f"{first['subfolder']}/{first['filename']}" if first["subfolder"] else first["filename"]
    assert model_file.endswith(".glb"), model_file
    views = []
    page.on("response", lambda r: views.append((r.url, r.status)) if "/view?" in r.url else None)
    # click the node's button on the canvas, where the frontend drew it
    point = page.evaluate(
        """(id) => { const n = app.graph.getNodeById(+id);
        const w = n.widgets.find(w => w.name === 'open in 3D preview'); if (!w) return null;
        const y = (w.y ?? w.last_y) + 10, x = n.size[0] / 2, ds = app.canvas.ds;
        const r = app.canvas.canvas.getBoundingClientRect();
        return [r.left + (n.pos[0] + x + ds.offset[0]) * ds.scale,
                r.top + (n.pos[1] + y + ds.offset[1]) * ds.scale]; }""",
        mesh_id,
    )
    assert point, "the mesh node has no 'open in 3D preview' button"
    page.mouse.click(*point)
    page.wait_for_function("() => app.graph._nodes.some(n => n.type === 'Preview3D')", timeout=10_000)
    page.wait_for_timeout(200)
    coverage = {"on_creation": _model_coverage(page)}  # usually before the model is in (not asserted: a race)
    linked = page.evaluate(
        """(id) => { const g = app.graph, p = g._nodes.find(n => n.type === 'Preview3D');
        const input = p.inputs.find(i => i.name === 'model_file'); const l = input && g.links[input.link];
        const w = p.widgets.find(w => w.name === 'model_file');
        const mesh = g.getNodeById(+id);
        return {origin: l ? [String(l.origin_id), mesh.outputs[l.origin_slot].name] : null,
                value: w ? w.value : null}; }""",
        mesh_id,
    )
    assert linked["origin"] == [mesh_id, "model_file"], linked
    # Preview3D shows the saved model: its widget names the file and the frontend fetched it from the output folder
    page.wait_for_function(
        "(f) => app.graph._nodes.find(n => n.type === 'Preview3D')"
        ".widgets.find(w => w.name === 'model_file').value === f",
        arg=model_file,
        timeout=30_000,
    )
    name = first["filename"]
    for _ in range(240):  # up to a minute
        if any(name in url and status == 200 for url, status in views):
            break
        page.wait_for_timeout(250)
    assert any(name in url and status == 200 for url, status in views), views
    # ... and draws it: the middle of its 3D view is covered by the model, not the empty scene's grid
    covered = 0.0
    for _ in range(60):  # up to a minute
        covered = _model_coverage(page)
        if covered > 0.5:
            break
        page.wait_for_timeout(1000)
    coverage["loaded"] = covered
    (artifacts / "mesh_preview3d_coverage.json").write_text(json.dumps(coverage))
    assert covered > 0.5, f"Preview3D shows no model ({covered:.0%} of the middle of its view differs from the scene)"
    assert ui.pack_errors() == [], ui.pack_errors()
    page.screenshot(path=str(artifacts / "mesh_in_preview3d.png"))


def _model_coverage(page) -> float:
    """Share of the middle third of Preview3D's canvas whose colour differs from the scene background (a corner)."""
    from io import BytesIO

    from PIL import Image

    rect = page.evaluate("""() => { const cs = [...document.querySelectorAll('.dom-widget canvas')]
        .filter(c => !c.classList.contains('sdl3d-viewer360-canvas'))
        .map(c => c.getBoundingClientRect()).filter(r => r.width > 50 && r.height > 50)
        .sort((a, b) => b.width * b.height - a.width * a.height);
        return cs.length ? {x: cs[0].x, y: cs[0].y, width: cs[0].width, height: cs[0].height} : null; }""")
    if not rect:
        return 0.0
    shot = Image.open(BytesIO(page.screenshot(clip=rect))).convert("RGB")
    w, h = shot.size
    background = shot.getpixel((3, h // 2))
    middle = shot.crop((w // 3, h // 3, 2 * w // 3, 2 * h // 3))
    raw = middle.tobytes()
    pixels = [raw[i : i + 3] for i in range(0, len(raw), 3)]
    differs = [p for p in pixels if max(abs(a - b) for a, b in zip(p, background)) > 30]
    return len(differs) / max(1, len(pixels))
