"""Generate the UI-format (0.4) twin of API-format workflows, so users can drag them into ComfyUI.

    python scripts/make_ui_workflow.py workflows/api/*.api.json   # writes workflows/<name>.json for each

API twins live in workflows/api/ so that ComfyUI's template list (workflows/*.json) shows only the UI files.
Layout: node sizes follow the frontend's own LiteGraph formula (slots, widgets; measured with frontend 1.32.9:
20 px per slot row, 24 px per widget, 14 px padding; title 30 px), nodes in graph order filled into columns,
and `extra.ds` (offset, scale) chosen so the first view shows the whole graph below the tab bar and right of the
sidebar on a 1920x1080 window. tests/browser checks this in the real frontend (no overlaps, everything visible).

Node definitions come from real ComfyUI imported in-process (stock nodes + this pack), so widget order follows
each node's `input_order`, exactly as the frontend builds widgets. The inverse (`ui_to_api`) is used by the
tests to check every shipped UI file against its API twin.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
SLOT_H, WIDGET_H, PAD_WIDGETS, PAD_EMPTY, TITLE_H = 20, 24, 14, 6, 30  # LiteGraph computeSize (frontend 1.32.9)
GAP_X, GAP_Y = 40, 30
# the free part of a 1920x1080 window (screen px): right of the sidebar, below tab bar / run bar, left of the
# minimap; below a scale of 0.6 the frontend stops drawing text (low-quality mode), so aim above it
VIEW_LEFT, VIEW_TOP, VIEW_W, VIEW_H = 80, 150, 1560, 880
# widths: at least what frontend 1.32.9 computes for the shipped values (it widens a node to fit, e.g. 4-digit sizes)
WIDE = {
    "CLIPTextEncode": 410,
    "CheckpointLoaderSimple": 280,
    "ConditioningZeroOut": 280,
    "DualCLIPLoader": 280,
    "EmptyLatentImage": 470,
    "EmptySD3LatentImage": 280,
    "FluxGuidance": 300,
    "ImageScaleBy": 320,
    "KSampler": 350,
    "LoadImage": 320,
    "MaskToImage": 280,
    "PreviewImage": 380,
    "SDL3D_LDM3DDecode": 320,
    "SDL3D_LDM3DEncode": 330,
    "SDL3D_LDM3DLoader": 370,
    "SDL3D_LPIPSLoader": 310,
    "SDL3D_LoadDepthPNG": 310,
    "SDL3D_SaveDepthMesh": 390,
    "SDL3D_SaveDepthPNG16": 370,
    "SDL3D_SaveStereo360": 370,
    "SDL3D_SphereKSampler": 390,
    "SDL3D_Stereo360": 430,
    "SDL3D_SyncDiffusionKSampler": 530,
    "SDL3D_SyncDiffusionModelPatch": 390,
    "SDL3D_VAEDecode360": 380,
    "SDL3D_VAEEncodeTiled": 360,
    "SaveImage": 370,
    "SolidMask": 370,
    "UNETLoader": 410,
    "VAEDecode": 280,
    "VAELoader": 320,
}
TEXT_BOX_H = 110  # multiline prompt box
IMAGE_H = 230  # room for an image preview under a loader / save node
VIEWER_W, VIEWER_H = 360, 272  # the pack's 360 viewer (web/js/sdl3d_viewer360.js: 260 px panel) replaces the preview
PREVIEW_NODES = {"SaveImage", "PreviewImage"}
PACK_IMAGE_NODES = {"SDL3D_SaveStereo360", "SDL3D_SaveDepthPNG16", "SDL3D_SaveDepthMesh"}


def load_object_info(comfyui_dir: Path) -> dict:
    """/object_info-like dict for every stock node and every node of this pack, built in-process."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    from comfy_inprocess import import_pack, init_stock_nodes, pack_node_classes, put_comfy_first

    put_comfy_first(comfyui_dir, cpu=True)
    init_stock_nodes()
    import nodes

    info = {name: _node_info(cls) for name, cls in nodes.NODE_CLASS_MAPPINGS.items()}
    for cls in pack_node_classes(import_pack()):
        info[cls.GET_SCHEMA().node_id] = cls.GET_NODE_INFO_V1()
    return info


def _node_info(cls) -> dict:
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return cls.GET_NODE_INFO_V1()
    inputs = cls.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {k: list(v) for k, v in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
        "output_node": getattr(cls, "OUTPUT_NODE", False),
    }


def _ordered_inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [
        (name, info["input"][section][name]) for section in ("required", "optional") for name in order.get(section, [])
    ]


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput")


def _widget_extras(name: str, spec: list) -> list:
    """Values the frontend stores after a widget's own value (seed control, image upload button)."""
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if spec[0] == "INT" and (name in SEED_NAMES or options.get("control_after_generate")):
        return ["fixed"]
    if options.get("image_upload"):
        return ["image"]
    return []


def _options(spec: list) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def node_size(class_type: str, info: dict, n_slot_inputs: int, widget_specs: list, fed_by_pack: bool) -> list[int]:
    """[width, height] (title excluded) that fits the node's slots and widgets, plus preview / viewer room."""
    n_outputs = len(info["output"])
    height = SLOT_H * max(n_slot_inputs, n_outputs)
    for name, spec in widget_specs:
        height += TEXT_BOX_H if _options(spec).get("multiline") else WIDGET_H
        height += WIDGET_H * len(_widget_extras(name, spec))
    height += PAD_WIDGETS if widget_specs else PAD_EMPTY
    width = WIDE.get(class_type, 270)
    if any(_options(spec).get("image_upload") for _, spec in widget_specs):
        height += IMAGE_H
    if class_type == "SDL3D_SaveDepthMesh":
        height += WIDGET_H  # the viewer extension's "open in 3D preview" button
    if class_type in PACK_IMAGE_NODES or (class_type in PREVIEW_NODES and fed_by_pack):
        width, height = max(width, VIEWER_W), height + VIEWER_H
    elif class_type in PREVIEW_NODES:
        width, height = max(width, 300), height + IMAGE_H
    return [width, height]


def _fill_columns(ordered: list[dict], max_height: int) -> list[list[dict]]:
    """Nodes in graph order, filled top to bottom into columns no taller than max_height (like wrapping text)."""
    columns, current, used = [], [], 0
    for node in ordered:
        h = node["size"][1] + TITLE_H
        if current and used + h > max_height:
            columns.append(current)
            current, used = [], 0
        current.append(node)
        used += h + GAP_Y
    return columns + [current]


def _extent(columns: list[list[dict]]) -> tuple[int, int]:
    width = sum(max(n["size"][0] for n in column) for column in columns) + GAP_X * (len(columns) - 1)
    height = max(sum(n["size"][1] + TITLE_H + GAP_Y for n in column) - GAP_Y for column in columns)
    return width, height


def layout(nodes_out: list[dict], depth: dict[int, int]) -> dict:
    """Place nodes left to right in graph order, filling columns top to bottom; the column height is chosen so the
    whole graph fits the first view at the largest scale (the frontend draws no text below 0.6). Returns extra.ds."""
    ordered = sorted(nodes_out, key=lambda n: (depth[n["id"]], n["order"]))
    tallest = max(n["size"][1] + TITLE_H for n in ordered)
    best = None
    for max_height in range(tallest, tallest + sum(n["size"][1] + TITLE_H + GAP_Y for n in ordered) + 1, 10):
        columns = _fill_columns(ordered, max_height)
        width, height = _extent(columns)
        scale = min(1.0, VIEW_W / width, VIEW_H / height)
        if best is None or (round(scale, 3), -width * height) > (round(best[0], 3), -best[2] * best[3]):
            best = (scale, columns, width, height)
    scale, columns, _, _ = best
    x = 0
    for column in columns:
        y = 0
        for node in column:
            node["pos"] = [x, y + TITLE_H]  # pos is the body's top-left; the title sits above it
            y += node["size"][1] + TITLE_H + GAP_Y
        x += max(n["size"][0] for n in column) + GAP_X
    scale = math.floor(scale * 1000) / 1000  # never larger than what fits
    return {"scale": scale, "offset": [round(VIEW_LEFT / scale, 1), round(VIEW_TOP / scale, 1)]}


def api_to_ui(prompt: dict, object_info: dict) -> dict:
    """Convert an API-format graph into a UI-format 0.4 workflow laid out left to right."""
    ids = {key: int(key) for key in prompt}
    depth = {}

    def level(key):
        if key not in depth:
            depth[key] = 0
            parents = [v[0] for v in prompt[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max((level(str(p)) for p in parents), default=-1)
        return depth[key]

    for key in prompt:
        level(key)
    links, nodes_out = [], []
    outputs_links: dict[tuple[int, int], list[int]] = {}
    for order, key in enumerate(sorted(prompt, key=lambda k: (depth[k], ids[k]))):
        node, info = prompt[key], object_info[prompt[key]["class_type"]]
        inputs_ui, widgets, widget_specs = [], [], []
        for name, spec in _ordered_inputs(info):
            if _is_widget(spec):
                widget_specs.append((name, spec))
            value = node["inputs"].get(name)
            if isinstance(value, list):
                link_id = len(links) + 1
                origin = int(value[0])
                origin_type = object_info[prompt[str(value[0])]["class_type"]]["output"][value[1]]
                links.append([link_id, origin, value[1], ids[key], len(inputs_ui), origin_type])
                outputs_links.setdefault((origin, value[1]), []).append(link_id)
                entry = {
                    "name": name,
                    "type": origin_type if not isinstance(spec[0], str) else spec[0],
                    "link": link_id,
                }
                if _is_widget(spec):
                    entry["widget"] = {"name": name}
                    widgets += [None] + _widget_extras(name, spec)
                inputs_ui.append(entry)
            elif _is_widget(spec):
                widgets += [value] + _widget_extras(name, spec)
            elif name in node["inputs"] or spec is not None:
                inputs_ui.append({"name": name, "type": spec[0] if isinstance(spec[0], str) else "COMBO", "link": None})
        parent_keys = [str(v[0]) for v in node["inputs"].values() if isinstance(v, list)]
        grandparents = [str(v[0]) for k in parent_keys for v in prompt[k]["inputs"].values() if isinstance(v, list)]
        n_slots = sum(1 for i in inputs_ui if "widget" not in i)
        # as the viewer extension decides: a pack node up to two links upstream (e.g. Preview <- MaskToImage <- pack)
        fed_by_pack = any(prompt[k]["class_type"].startswith("SDL3D_") for k in parent_keys + grandparents)
        size = node_size(node["class_type"], info, n_slots, widget_specs, fed_by_pack)
        nodes_out.append(
            {
                "id": ids[key],
                "type": node["class_type"],
                "pos": [0, 0],
                "size": size,
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": inputs_ui,
                "outputs": [],
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
                **({"title": node["_meta"]["title"]} if node.get("_meta", {}).get("title") else {}),
            }
        )
    for ui_node in nodes_out:
        info = object_info[ui_node["type"]]
        names = info.get("output_name") or info["output"]
        ui_node["outputs"] = [
            {"name": names[i], "type": t, "links": outputs_links.get((ui_node["id"], i), []), "slot_index": i}
            for i, t in enumerate(info["output"])
        ]
    ds = layout(nodes_out, {ids[k]: depth[k] for k in prompt})
    return {
        "last_node_id": max(ids.values()),
        "last_link_id": len(links),
        "nodes": nodes_out,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": ds},
        "version": 0.4,
    }


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Inverse of api_to_ui for the shipped files (widgets by position, links by id); drops _meta."""
    link_by_id = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: link_by_id[i["link"]] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs = {}
        for name, spec in _ordered_inputs(info):
            if _is_widget(spec):
                value = values.pop(0) if values else None
                for _ in _widget_extras(name, spec):
                    values.pop(0)
                if name in linked:
                    inputs[name] = [str(linked[name][1]), linked[name][2]]
                elif value is not None:
                    inputs[name] = value
            elif name in linked:
                inputs[name] = [str(linked[name][1]), linked[name][2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def main(argv=None) -> int:
    paths = [Path(p) for p in (argv if argv is not None else sys.argv[1:])]
    comfyui = Path(os.environ.get("COMFYUI_DIR", REPO_ROOT / ".cache" / "ComfyUI"))
    object_info = load_object_info(comfyui.resolve())
    for path in paths:
        prompt = json.loads(path.read_text())
        name = path.name.replace(".api.json", ".json")
        target = path.parent.parent / name if path.parent.name == "api" else path.with_name(name)
        target.write_text(json.dumps(api_to_ui(prompt, object_info), indent=1) + "\n")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
