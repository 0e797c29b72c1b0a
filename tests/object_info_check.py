"""Check workflow files against ComfyUI's own /object_info (written here, independent of scripts/make_ui_workflow.py).

`check_api(prompt, info, compatible)` and `check_ui(workflow, info, compatible)` return a list of problems (empty when
the file is valid): unknown node types, unknown or missing inputs, widget values of the wrong type, out of their
min/max or not among a combo's options, links to a missing node or output slot, links whose output type does not
fit the input type. `compatible(output_type, input_type)` is ComfyUI's `validate_node_input`.

UI files: widget values are matched to the node's widget inputs in `input_order` (required, then optional), as the
frontend builds widgets; the frontend stores one extra value after a seed widget (its control_after_generate mode)
and after an image-upload combo (the upload button).
"""

from __future__ import annotations

import math

WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
CONTROL_MODES = {"fixed", "increment", "decrement", "randomize"}
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


def _options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def _kind(spec) -> str:
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def _is_widget(spec) -> bool:
    return _kind(spec) in WIDGET_KINDS and not _options(spec).get("forceInput")


def _spec(info: dict, name: str):
    for section in ("required", "optional"):
        if name in info["input"].get(section, {}):
            return info["input"][section][name]
    return None


def _ordered_inputs(info: dict) -> list[tuple[str, list]]:
    order = info.get("input_order") or {k: list(v) for k, v in info["input"].items()}
    return [
        (name, info["input"][section][name]) for section in ("required", "optional") for name in order.get(section, [])
    ]


def _type_name(kind) -> str:
    return "COMBO" if isinstance(kind, list) else kind


def check_value(where: str, spec, value) -> list[str]:
    kind, opts = _kind(spec), _options(spec)
    if kind == "INT":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "FLOAT":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind == "STRING":
        ok = isinstance(value, str)
    elif kind == "BOOLEAN":
        ok = isinstance(value, bool)
    else:
        choices = spec[0] if isinstance(spec[0], list) else opts.get("options", [])
        return [] if value in choices else [f"{where}: {value!r} is not one of the {len(choices)} options"]
    if not ok:
        return [f"{where}: {value!r} is not a {kind}"]
    problems = []
    if kind in ("INT", "FLOAT"):
        if "min" in opts and value < opts["min"]:
            problems.append(f"{where}: {value} < min {opts['min']}")
        if "max" in opts and value > opts["max"]:
            problems.append(f"{where}: {value} > max {opts['max']}")
    return problems


def _check_link(where: str, output_types: list, slot, input_spec, compatible) -> list[str]:
    if not isinstance(slot, int) or not 0 <= slot < len(output_types):
        return [f"{where}: output slot {slot} does not exist ({len(output_types)} outputs)"]
    out_type, in_type = _type_name(output_types[slot]), _type_name(input_spec[0])
    return [] if compatible(out_type, in_type) else [f"{where}: output type {out_type} does not fit input {in_type}"]


def check_api(prompt: dict, info: dict, compatible) -> list[str]:
    problems = []
    for node_id, node in prompt.items():
        class_type = node["class_type"]
        if class_type not in info:
            problems.append(f"node {node_id}: unknown node type {class_type}")
            continue
        node_info = info[class_type]
        for name in node_info["input"].get("required", {}):
            if name not in node["inputs"]:
                problems.append(f"node {node_id} ({class_type}): required input {name} missing")
        for name, value in node["inputs"].items():
            where = f"node {node_id} ({class_type}).{name}"
            spec = _spec(node_info, name)
            if spec is None:
                problems.append(f"{where}: no such input")
            elif isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                source = prompt.get(value[0])
                if source is None or source["class_type"] not in info:
                    problems.append(f"{where}: links to missing node {value[0]}")
                else:
                    problems += _check_link(where, info[source["class_type"]]["output"], value[1], spec, compatible)
            elif not _is_widget(spec):
                problems.append(f"{where}: a value for a link-only input ({_kind(spec)})")
            else:
                problems += check_value(where, spec, value)
    return problems


def check_ui(workflow: dict, info: dict, compatible) -> list[str]:
    problems = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        if kind not in info:
            problems.append(f"node {node['id']}: unknown node type {kind}")
            continue
        node_info, label = info[kind], f"node {node['id']} ({kind})"
        linked = set()
        for index, slot in enumerate(node.get("inputs", [])):
            spec = _spec(node_info, slot["name"])
            if spec is None:
                problems.append(f"{label}: input slot {slot['name']} does not exist")
            elif slot.get("link") is not None:
                linked.add(slot["name"])
                link = links.get(slot["link"])
                if link is None or link[3] != node["id"] or link[4] != index:
                    problems.append(f"{label}.{slot['name']}: link {slot['link']} does not end at this slot")
        outputs = [_type_name(t) for t in node_info["output"]]
        if [o["type"] for o in node.get("outputs", [])] != outputs[: len(node.get("outputs", []))]:
            problems.append(f"{label}: output types {[o['type'] for o in node.get('outputs', [])]} != {outputs}")
        values = list(node.get("widgets_values") or [])
        for name, spec in _ordered_inputs(node_info):
            if not _is_widget(spec):
                continue
            if not values:
                problems.append(f"{label}.{name}: no widget value")
                break
            value = values.pop(0)
            if name not in linked:
                problems += check_value(f"{label}.{name}", spec, value)
            if _kind(spec) == "INT" and (name in SEED_NAMES or _options(spec).get("control_after_generate")):
                mode = values.pop(0) if values else None
                if mode not in CONTROL_MODES:
                    problems.append(f"{label}.{name}: control_after_generate value {mode!r}")
            if _options(spec).get("image_upload"):
                values.pop(0) if values else problems.append(f"{label}.{name}: no upload widget value")
        if values:
            problems.append(f"{label}: {len(values)} widget values left over: {values}")
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        if origin not in nodes or target not in nodes:
            problems.append(f"link {link_id}: missing end node")
            continue
        source, dest = nodes[origin], nodes[target]
        if source["type"] in FRONTEND_ONLY or dest["type"] in FRONTEND_ONLY:
            continue
        if not 0 <= target_slot < len(dest.get("inputs", [])):
            problems.append(f"link {link_id}: target slot {target_slot} does not exist")
            continue
        spec = _spec(info[dest["type"]], dest["inputs"][target_slot]["name"]) if dest["type"] in info else None
        if spec is None or source["type"] not in info:
            continue  # reported above
        output_types = info[source["type"]]["output"]
        target_name = dest["inputs"][target_slot]["name"]
        where = f"link {link_id} ({source['type']}:{origin_slot} -> {dest['type']}.{target_name})"
        problems += _check_link(where, output_types, origin_slot, spec, compatible)
        if 0 <= origin_slot < len(output_types) and link_type != _type_name(output_types[origin_slot]):
            problems.append(f"{where}: link type {link_type} != output type {output_types[origin_slot]}")
    return problems
