"""The pack in the real ComfyUI frontend (1.32.9 with ComfyUI 0.3.75; 1.35.9 via SDL3D_FRONTEND_ROOT): templates,
graphs, a run, the 360 viewer."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from headless import PACK_DIR_NAME  # noqa: E402

UI_WORKFLOWS = sorted((REPO_ROOT / "workflows").glob("*.json"))
RUN_WORKFLOW = REPO_ROOT / "workflows" / "stereo360_tb.json"  # no model needed: runs as shipped in seconds

NODE_BOXES = """() => app.graph._nodes.map(n => { const b = n.getBounding ? n.getBounding() : null;
    const c = n.computeSize(); return {id: n.id, type: n.type, comfyClass: n.comfyClass, has_errors: !!n.has_errors,
    box: b ? [b[0], b[1], b[2], b[3]] : [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30],
    size: [n.size[0], n.size[1]], compute: [c[0], c[1]],
    outputs: (n.outputs || []).map(o => ({name: o.name, label: o.label || o.localized_name || null,
                                         type: o.type}))}; })"""


def _overlaps(nodes: list[dict]) -> list[str]:
    """Pairs of nodes whose boxes (title bar included) overlap."""
    found = []
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            ax, ay, aw, ah = a["box"]
            bx, by, bw, bh = b["box"]
            if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
                found.append(f"{a['type']} #{a['id']} overlaps {b['type']} #{b['id']}")
    return found


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_templates_list_only_ui_workflows_each_with_a_thumbnail(ui_server):
    status, body = _get(ui_server.url + "/workflow_templates")
    templates = json.loads(body)[PACK_DIR_NAME]
    assert sorted(templates) == sorted(p.stem for p in UI_WORKFLOWS)
    assert not [t for t in templates if t.endswith(".api")]
    for name in templates:
        # frontend 1.32.9 asks /api/workflow_templates/<module>/<name>.jpg for a custom node's thumbnail
        status, thumb = _get(f"{ui_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{name}.jpg")
        assert status == 200 and thumb[:3] == b"\xff\xd8\xff", name  # a JPEG
        status, body = _get(f"{ui_server.url}/api/workflow_templates/{PACK_DIR_NAME}/{name}.json")
        assert json.loads(body)["version"] == 0.4, name


@pytest.mark.parametrize("path", UI_WORKFLOWS, ids=[p.stem for p in UI_WORKFLOWS])
def test_workflow_opens_readable(ui, ui_server, path, artifacts):
    workflow = json.loads(path.read_text())
    ui.load(workflow)
    page = ui.page
    assert page.locator("[aria-labelledby=global-missing-nodes]").count() == 0, "missing-nodes dialog"
    nodes = page.evaluate(NODE_BOXES)
    assert len(nodes) == len(workflow["nodes"])
    (artifacts / f"boxes_{path.stem}.json").write_text(json.dumps(nodes, indent=1))
    assert not [n["type"] for n in nodes if n["has_errors"]], "nodes the frontend does not know"
    object_info = json.loads(_get(ui_server.url + "/object_info")[1])
    for n in nodes:
        if n["type"].startswith("SDL3D_"):
            names = [o["label"] or o["name"] for o in n["outputs"]]
            assert names == object_info[n["type"]]["output_name"], n["type"]
            assert not [o for o in n["outputs"] if o["name"] == o["type"] and o["name"] not in ("MODEL", "CLIP", "VAE")]
        assert n["size"][0] >= n["compute"][0] - 1 and n["size"][1] >= n["compute"][1] - 1, (n["type"], n)
    assert _overlaps(nodes) == []  # title bar included (getBounding)
    # the first view shows every node, clear of the sidebar, tab bar, run bar and minimap
    hidden = page.evaluate(
        """(boxes) => { const c = app.canvas.canvas, ds = app.canvas.ds, bad = [];
        for (const n of boxes) { const [x, y, w, h] = n.box;
          for (const [px, py] of [[x + 4, y + 4], [x + w - 4, y + 4], [x + 4, y + h - 4], [x + w - 4, y + h - 4]]) {
            const sx = (px + ds.offset[0]) * ds.scale, sy = (py + ds.offset[1]) * ds.scale;
            const el = document.elementFromPoint(sx, sy);
            if (!el || (el !== c && !el.closest('.dom-widget'))) {
              bad.push([n.type, n.id, sx, sy, el && el.className]); break; }
          } } return bad; }""",
        nodes,
    )
    assert hidden == [], f"covered or off-screen at first view: {hidden}"
    # readable: the frontend draws titles and widget text at this zoom (it stops below its low-quality threshold)
    zoom = page.evaluate("() => ({scale: app.canvas.ds.scale, low: app.canvas.low_quality ?? null})")
    assert zoom["low"] is False or (zoom["low"] is None and zoom["scale"] >= 0.6), f"first view too small: {zoom}"
    assert ui.pack_errors() == []
    page.screenshot(path=str(artifacts / f"workflow_{path.stem}.png"))


def test_run_button_executes_a_workflow_with_previews_and_the_360_viewer(ui, artifacts):
    page = ui.page
    ui.load(json.loads(RUN_WORKFLOW.read_text()))
    with page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Run", exact=True).click()
    assert answer.value.ok, answer.value.text()
    prompt_id = answer.value.json()["prompt_id"]
    page.wait_for_function("(pid) => pid in window.__done", arg=prompt_id, timeout=300_000)
    assert page.evaluate("(pid) => window.__done[pid]", prompt_id) == "execution_success"
    shown = "() => app.graph._nodes.filter(n => n.imgs && n.imgs.length).map(n => n.type)"
    page.wait_for_function(
        f"() => {{ const t = ({shown})(); return t.includes('SDL3D_SaveStereo360') && t.includes('PreviewImage'); }}",
        timeout=30_000,
    )
    # the viewer appears in the Save Stereo 360 node (a top-bottom stereo pair) and renders
    panel = ".sdl3d-viewer360[data-node-type=SDL3D_SaveStereo360]"
    viewer = page.locator(panel)
    viewer.wait_for(state="visible", timeout=60_000)
    canvas = viewer.locator(".sdl3d-viewer360-canvas")
    page.wait_for_timeout(1500)

    def pixels():
        return page.evaluate(
            """(sel) => { const c = document.querySelector(sel + ' .sdl3d-viewer360-canvas');
            const t = document.createElement('canvas'); t.width = 64; t.height = 32;
            const g = t.getContext('2d'); g.drawImage(c, 0, 0, 64, 32);
            return Array.from(g.getImageData(0, 0, 64, 32).data); }""",
            panel,
        )

    def stats(px):
        values = [v for i, v in enumerate(px) if i % 4 != 3]
        mean = sum(values) / len(values)
        return mean, sum((v - mean) ** 2 for v in values) / len(values)

    def diff(a, b):
        return sum(abs(x - y) for x, y in zip(a, b)) / len(a)

    page.screenshot(path=str(artifacts / "run_before_checks.png"))
    first = pixels()
    mean, var = stats(first)
    assert var > 20, f"the viewer canvas is blank (mean {mean:.1f}, variance {var:.1f})"
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 30, steps=6)
    page.mouse.up()
    page.wait_for_timeout(300)
    dragged = pixels()
    assert diff(first, dragged) > 2, "dragging did not change the view"
    page.screenshot(path=str(artifacts / "viewer_dragged.png"))
    viewer.locator(".sdl3d-viewer360-reset").click()
    page.wait_for_timeout(200)
    assert diff(first, pixels()) < 1, "reset did not return to the first view"
    viewer.locator(".sdl3d-viewer360-eye").select_option("anaglyph")
    page.wait_for_timeout(200)
    anaglyph = pixels()
    assert diff(first, anaglyph) > 1, "the anaglyph looks like the left eye"
    depth_button = viewer.locator(".sdl3d-viewer360-depth")
    assert depth_button.is_visible(), "no depth toggle although the graph previews the depth"
    depth_button.click()
    page.wait_for_timeout(200)
    assert diff(anaglyph, pixels()) > 1, "the depth toggle changed nothing"
    depth_button.click()
    viewer.locator(".sdl3d-viewer360-eye").select_option("left")
    viewer.screenshot(path=str(artifacts / "viewer_panel.png"))
    page.screenshot(path=str(artifacts / "run_stereo360_tb.png"))
    assert ui.pack_errors() == []
    # the previews and viewers the run added fit the room the layout left for them: still no overlap
    page.wait_for_timeout(300)
    nodes = page.evaluate(NODE_BOXES)
    (artifacts / "boxes_after_run_stereo360_tb.json").write_text(json.dumps(nodes, indent=1))
    assert _overlaps(nodes) == [], "nodes overlap once the run's previews are shown"
