"""Workflows: API format as POST /prompt wants it, UI format (the frontend's saved file) converted to it.

The conversion follows what the frontend's ``graphToPrompt`` does, from the server's own ``/object_info``:
widget values are matched to the node's widget inputs in ``input_order`` (required, then optional), the extra
values the frontend stores after some widgets (seed control "fixed"/"randomize", the image upload button) are
skipped, links become ``[origin_id, slot]``, and nodes that do not execute are resolved away: Note/MarkdownNote
are dropped, Reroute is followed to its source, a PrimitiveNode's value is the target widget's own value, muted
nodes (mode 2) are dropped and bypassed nodes (mode 4) pass their input of the same type through.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "animated_image_upload")
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MODE_MUTED, MODE_BYPASSED = 2, 4


class WorkflowFormatError(ValueError):
    """The workflow file cannot be read or converted; the message says which node and what to do."""


@dataclass
class Workflow:
    """A loaded workflow: ``api`` (None until a UI file is converted), ``ui`` (None for a bare API file)."""

    path: Path
    api: dict | None = None
    ui: dict | None = None
    widget_index: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def needs_conversion(self) -> bool:
        return self.api is None

    def convert(self, object_info: dict) -> None:
        self.api, self.widget_index = ui_to_api(self.ui, object_info)

    def ui_with(self, changes: dict[tuple[str, str], object]) -> dict | None:
        """A copy of the UI graph with overridden widget values written in, for the PNG's embedded workflow."""
        if self.ui is None:
            return None
        ui = copy.deepcopy(self.ui)
        by_id = {str(node["id"]): node for node in ui.get("nodes", [])}
        for (node_id, name), value in changes.items():
            index = self.widget_index.get((node_id, name))
            node = by_id.get(node_id)
            if index is not None and node is not None and isinstance(node.get("widgets_values"), list):
                node["widgets_values"][index] = value
            elif node is not None and isinstance(node.get("widgets_values"), dict):
                node["widgets_values"][name] = value
        return ui


def is_ui_format(data: dict) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data


def load_workflow(path: Path) -> Workflow:
    """Read an API file (its UI twin ``<name>.json`` beside ``<name>.api.json`` is kept for the PNGs) or a UI file."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkflowFormatError(f"cannot read workflow {path}: {err}") from None
    if is_ui_format(data):
        if data.get("definitions", {}).get("subgraphs"):
            raise WorkflowFormatError(
                f"{path}: subgraphs are not supported by the converter; export the workflow "
                "with 'Export (API)' in ComfyUI and pass that file"
            )
        return Workflow(path=Path(path), ui=data)
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(node, dict) and "class_type" in node for node in data.values())
    ):
        raise WorkflowFormatError(
            f"{path} is neither an API-format workflow ({{id: {{class_type, inputs}}}}) nor a "
            "UI-format one (nodes + links)"
        )
    twin_name = Path(path).name.replace(".api.json", ".json")
    twin = Path(path).with_name(twin_name)
    if not twin.exists() and Path(path).parent.name == "api":  # shipped layout: workflows/api/<name>.api.json
        twin = Path(path).parent.parent / twin_name
    ui = None
    if twin != Path(path) and twin.exists():
        try:
            twin_data = json.loads(twin.read_text())
            ui = twin_data if is_ui_format(twin_data) else None
        except (OSError, json.JSONDecodeError):
            ui = None
    return Workflow(path=Path(path), api=data, ui=ui)


def ordered_inputs(info: dict) -> list[tuple[str, list]]:
    """(name, spec) of a node's inputs in the order the frontend creates widgets: required, then optional."""
    sections = info.get("input", {})
    order = info.get("input_order") or {k: list(v) for k, v in sections.items() if isinstance(v, dict)}
    return [
        (name, sections[section][name])
        for section in ("required", "optional")
        for name in order.get(section, [])
        if name in sections.get(section, {})
    ]


def input_spec(info: dict, name: str) -> list | None:
    for section in ("required", "optional"):
        spec = info.get("input", {}).get(section, {}).get(name)
        if spec is not None:
            return spec
    return None


def spec_options(spec) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def spec_kind(spec) -> str:
    """INT, FLOAT, STRING, BOOLEAN, COMBO (a list of choices or the new-style "COMBO"), or a socket type."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return "COMBO" if isinstance(kind, list) else str(kind)


def is_widget(spec) -> bool:
    return spec_kind(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput")


def combo_choices(spec) -> list | None:
    if isinstance(spec, (list, tuple)) and spec and isinstance(spec[0], list):
        return spec[0]
    options = spec_options(spec)
    return options.get("options") if spec_kind(spec) == "COMBO" else None


def _extra_widget_values(name: str, spec, following) -> int:
    """How many values the frontend stored after this widget's own value (seed control, upload button)."""
    options = spec_options(spec)
    if spec_kind(spec) == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed")):
        return 1 if following in SEED_CONTROL_VALUES else 0
    if any(options.get(key) for key in UPLOAD_OPTIONS):
        return 1 if following in ("image", "video", "audio", None) else 0
    return 0


def ui_to_api(workflow: dict, object_info: dict) -> tuple[dict, dict[tuple[str, str], int]]:
    """Convert a UI-format workflow; return the API graph and where each widget value sits in widgets_values."""
    nodes = {str(node["id"]): node for node in workflow.get("nodes", [])}
    links = {}
    for link in workflow.get("links", []):
        if isinstance(link, dict):  # newer serialisation
            links[link["id"]] = (str(link["origin_id"]), link["origin_slot"], link.get("type"))
        else:
            links[link[0]] = (str(link[1]), link[2], link[5] if len(link) > 5 else None)
    prompt, widget_index = {}, {}
    for node_id, node in nodes.items():
        kind = node.get("type")
        if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASSED) or kind in VIRTUAL_NODES and kind not in object_info:
            continue
        info = object_info.get(kind)
        if info is None:
            raise WorkflowFormatError(
                f"node {node_id} ('{node.get('title') or kind}') is of type '{kind}', which the "
                "server does not have: install that custom node pack on every server"
            )
        linked = {slot["name"]: slot["link"] for slot in node.get("inputs", []) if slot.get("link") is not None}
        values = node.get("widgets_values")
        inputs, position = {}, 0
        for name, spec in ordered_inputs(info):
            if is_widget(spec):
                if isinstance(values, dict):
                    value, has_value = values.get(name), name in values
                else:
                    values = values or []
                    has_value = position < len(values)
                    value = values[position] if has_value else None
                    if has_value:
                        widget_index[(node_id, name)] = position
                    following = values[position + 1] if position + 1 < len(values) else "<end>"
                    position += 1 + (_extra_widget_values(name, spec, following) if has_value else 0)
                source = _resolve_link(linked.get(name), links, nodes) if name in linked else None
                if source is not None:
                    inputs[name] = source
                elif has_value:
                    inputs[name] = value
            elif name in linked:
                source = _resolve_link(linked[name], links, nodes)
                if source is not None:
                    inputs[name] = source
        entry = {"class_type": kind, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        prompt[node_id] = entry
    return prompt, widget_index


def _resolve_link(link_id, links: dict, nodes: dict, depth: int = 0):
    """[origin_id, slot] for a link, following Reroutes and bypassed nodes; None for a PrimitiveNode or a muted
    source (the target keeps its own widget value, as the frontend does)."""
    if link_id is None or link_id not in links or depth > 64:
        return None
    origin_id, slot, link_type = links[link_id]
    origin = nodes.get(origin_id)
    if origin is None:
        return None
    kind, mode = origin.get("type"), origin.get("mode", 0)
    if kind == "Reroute":
        upstream = next((s.get("link") for s in origin.get("inputs", []) if s.get("link") is not None), None)
        return _resolve_link(upstream, links, nodes, depth + 1)
    if kind == "PrimitiveNode" or mode == MODE_MUTED:
        return None
    if mode == MODE_BYPASSED:
        wanted = link_type or (origin.get("outputs") or [{}] * (slot + 1))[slot].get("type")
        candidates = [s for s in origin.get("inputs", []) if s.get("link") is not None and s.get("type") == wanted]
        same_slot = [s for i, s in enumerate(origin.get("inputs", [])) if i == slot and s in candidates]
        chosen = (same_slot or candidates or [None])[0]
        return _resolve_link(chosen["link"], links, nodes, depth + 1) if chosen else None
    return [origin_id, slot]


def node_title(prompt: dict, node_id: str) -> str:
    node = prompt[node_id]
    return node.get("_meta", {}).get("title") or node["class_type"]
