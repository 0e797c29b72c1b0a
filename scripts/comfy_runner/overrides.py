"""Overrides of input values: ``Node.input=value`` by node id or title, shortcuts, and batch files of them.

A node reference is, in this order of preference: the node id ("6"), its exact title, its class type
("SDL3D_SyncDiffusionKSampler"), its display name ("SyncDiffusion KSampler"), or the start of its title. Several
nodes matching at the same level is an error that lists them. Values are converted to the input's type as the
server's /object_info declares it (so "7" becomes 7 for an INT and stays "7" for a STRING).

Shortcuts: ``prompt`` and ``negative`` set the text of the encoders that feed the samplers' positive/negative
inputs (followed upstream through conditioning nodes); ``seed`` sets every seed/noise_seed, ``steps`` every steps,
``size`` (WxH) every node with both width and height, ``checkpoint`` every ckpt_name (or model_name of a loader).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .graph import combo_choices, input_spec, node_title, spec_kind

SHORTCUTS = ("prompt", "negative", "seed", "size", "steps", "checkpoint")
TEXT_INPUTS = ("text", "text_g", "text_l", "prompt")


class OverrideError(ValueError):
    """An override that cannot be applied: names the override, what is wrong and what would work."""


def parse_set(spec: str) -> tuple[str, str, str]:
    """'Node title.input=value' -> (node reference, input name, raw value). Titles may contain dots."""
    if "=" not in spec:
        raise OverrideError(f"--set '{spec}': expected 'Node.input=value' (node id or title, then the input name)")
    target, value = spec.split("=", 1)
    if "." not in target:
        raise OverrideError(f"--set '{spec}': expected 'Node.input=value'; '{target}' has no '.input' part")
    node_ref, name = target.rsplit(".", 1)
    if not node_ref.strip() or not name.strip():
        raise OverrideError(f"--set '{spec}': empty node reference or input name")
    return node_ref.strip(), name.strip(), value


def find_node(prompt: dict, ref: str, object_info: dict) -> str:
    """The node id that `ref` names (id, title, class type, display name, title prefix); errors list candidates."""
    ref_text = str(ref).strip()
    if ref_text in prompt:
        return ref_text
    rules = (
        lambda nid: prompt[nid].get("_meta", {}).get("title") == ref_text,
        lambda nid: prompt[nid]["class_type"] == ref_text,
        lambda nid: object_info.get(prompt[nid]["class_type"], {}).get("display_name") == ref_text,
        lambda nid: (prompt[nid].get("_meta", {}).get("title") or "").startswith(ref_text),
    )
    for rule in rules:
        matches = [nid for nid in prompt if rule(nid)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = ", ".join(f"{nid} ('{node_title(prompt, nid)}')" for nid in matches)
            raise OverrideError(f"node '{ref_text}' is ambiguous: {listed}; use the node id or the full title")
    known = ", ".join(f"{nid} ('{node_title(prompt, nid)}')" for nid in sorted(prompt, key=_id_key))
    raise OverrideError(f"no node '{ref_text}' in the workflow; nodes: {known}")


def coerce(value, spec, where: str):
    """Convert a value (often a string from the command line or a CSV) to the input's declared type."""
    kind = spec_kind(spec) if spec is not None else None
    try:
        if kind == "INT":
            return int(value) if not isinstance(value, str) else int(float(value)) if "." in value else int(value)
        if kind == "FLOAT":
            return float(value)
        if kind == "BOOLEAN":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("true", "1", "yes")
            return bool(value)
        if kind == "STRING":
            return (
                value
                if isinstance(value, str)
                else json.dumps(value)
                if isinstance(value, (dict, list))
                else str(value)
            )
        if kind == "COMBO":
            choices = combo_choices(spec) or []
            if isinstance(value, str) and value not in choices:
                for choice in choices:
                    if str(choice) == value:
                        return choice
            return value
    except (TypeError, ValueError):
        raise OverrideError(f"{where}: '{value}' is not a valid {kind}") from None
    if isinstance(value, str) and kind is None:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def set_input(prompt: dict, node_id: str, name: str, value, object_info: dict, changes: dict) -> None:
    node = prompt[node_id]
    info = object_info.get(node["class_type"], {})
    spec = input_spec(info, name)
    where = f"node {node_id} ('{node_title(prompt, node_id)}') input '{name}'"
    if spec is None and name not in node["inputs"]:
        names = sorted(
            set(node["inputs"]) | {n for s in ("required", "optional") for n in info.get("input", {}).get(s, {})}
        )
        raise OverrideError(f"{where}: no such input; inputs: {', '.join(names)}")
    if isinstance(node["inputs"].get(name), list):
        raise OverrideError(f"{where} is connected to another node's output; set that node's input instead")
    node["inputs"][name] = coerce(value, spec, where)
    changes[(node_id, name)] = node["inputs"][name]


def apply_set(prompt: dict, spec: str, object_info: dict, changes: dict) -> None:
    ref, name, value = parse_set(spec)
    set_input(prompt, find_node(prompt, ref, object_info), name, value, object_info, changes)


def apply_shortcut(prompt: dict, key: str, value, object_info: dict, changes: dict) -> None:
    """Apply one of SHORTCUTS to every node it concerns; error when the workflow has none."""
    if value is None or value == "":
        return
    if key == "size":
        width, height = _parse_size(value)
        targets = [(nid, {"width": width, "height": height}) for nid in _with_inputs(prompt, "width", "height")]
    elif key in ("seed", "steps"):
        names = ("seed", "noise_seed") if key == "seed" else ("steps",)
        targets = [(nid, {n: value}) for nid in prompt for n in names if _is_value(prompt, nid, n)]
    elif key == "checkpoint":
        targets = [(nid, {"ckpt_name": value}) for nid in _with_inputs(prompt, "ckpt_name")] or [
            (nid, {"model_name": value})
            for nid in _with_inputs(prompt, "model_name")
            if "loader" in prompt[nid]["class_type"].lower()
        ]
    elif key in ("prompt", "negative"):
        found = text_encoders(prompt, "positive" if key == "prompt" else "negative")
        targets = [(nid, {name: value}) for nid, name in found]
    else:
        raise OverrideError(f"unknown shortcut '{key}'; shortcuts: {', '.join(SHORTCUTS)}")
    if not targets:
        raise OverrideError(f"--{key}: the workflow has no node this applies to; use --set 'Node.input=value'")
    for node_id, values in targets:
        for name, item in values.items():
            set_input(prompt, node_id, name, item, object_info, changes)


def text_encoders(prompt: dict, side: str) -> list[tuple[str, str]]:
    """(node id, text input) of the encoders upstream of every sampler/guider input named `side`."""
    found, seen = [], set()
    queue = [
        value[0]
        for node in prompt.values()
        for name, value in node["inputs"].items()
        if name == side and isinstance(value, list)
    ]
    while queue:
        node_id = str(queue.pop(0))
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        texts = [n for n in TEXT_INPUTS if isinstance(prompt[node_id]["inputs"].get(n), str)]
        if texts:
            found += [(node_id, n) for n in texts]
            continue
        queue += [value[0] for value in prompt[node_id]["inputs"].values() if isinstance(value, list)]
    return found


def _parse_size(value) -> tuple[int, int]:
    text = str(value).lower().replace(" ", "")
    parts = text.split("x")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise OverrideError(f"--size '{value}': expected WIDTHxHEIGHT, e.g. 1024x512")
    return int(parts[0]), int(parts[1])


def _is_value(prompt: dict, node_id: str, name: str) -> bool:
    return name in prompt[node_id]["inputs"] and not isinstance(prompt[node_id]["inputs"][name], list)


def _with_inputs(prompt: dict, *names: str) -> list[str]:
    return [nid for nid in prompt if all(_is_value(prompt, nid, n) for n in names)]


def _id_key(node_id: str):
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def read_batch(path: Path) -> list[dict]:
    """Rows of a batch file: JSONL (one object a line) or CSV (a header row). Keys: 'id', the shortcuts,
    'Node.input' overrides, or 'set' (a list of 'Node.input=value' strings). Blank lines/cells are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as err:
        raise OverrideError(f"cannot read batch file {path}: {err}") from None
    rows = []
    if path.suffix.lower() == ".csv":
        for number, row in enumerate(csv.DictReader(text.splitlines()), start=2):
            cleaned = {k.strip(): v for k, v in row.items() if k and v is not None and v.strip() != ""}
            if None in row:
                raise OverrideError(f"{path}:{number}: more cells than header columns")
            if cleaned:
                rows.append(_check_row(cleaned, f"{path}:{number}"))
        return rows
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise OverrideError(
                f"{path}:{number}: not a JSON object ({err.msg}); JSONL wants one object a line"
            ) from None
        if not isinstance(row, dict):
            raise OverrideError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        rows.append(_check_row(row, f"{path}:{number}"))
    return rows


def _check_row(row: dict, where: str) -> dict:
    for key in row:
        if key not in SHORTCUTS and key not in ("id", "set") and "." not in key:
            raise OverrideError(
                f"{where}: unknown column '{key}'; use id, {', '.join(SHORTCUTS)}, set, or 'Node title.input'"
            )
    if "set" in row and not isinstance(row["set"], (list, str)):
        raise OverrideError(f"{where}: 'set' must be a list of 'Node.input=value' strings")
    return {**row, "_where": where}


def apply_row(prompt: dict, row: dict, object_info: dict, changes: dict) -> None:
    """Apply one batch row (shortcuts first, then 'set', then 'Node.input' keys) to `prompt` in place."""
    where = row.get("_where", "batch row")
    try:
        for key in SHORTCUTS:
            if key in row:
                apply_shortcut(prompt, key, row[key], object_info, changes)
        sets = row.get("set", [])
        for spec in [sets] if isinstance(sets, str) else sets:
            apply_set(prompt, spec, object_info, changes)
        for key, value in row.items():
            if "." in key and key not in ("_where",):
                ref, name = key.rsplit(".", 1)
                set_input(prompt, find_node(prompt, ref, object_info), name, value, object_info, changes)
    except OverrideError as err:
        raise OverrideError(f"{where}: {err}") from None
