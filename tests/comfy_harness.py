"""Run pack nodes (V3) and stock nodes (V1) in-process the way ComfyUI's executor does.

Only for tests: `run_node(NodeClass, **inputs)` returns the node's output tuple; `run_node_ui` also returns the
`ui` payload (what the frontend and /history would get).
"""

from __future__ import annotations

import asyncio
import inspect

import torch


def prepare_class_clone(node_cls, hidden: dict):
    """The class clone ComfyUI executes, with these hidden inputs (io.Hidden -> value). ComfyUI 0.3.75 takes the
    hidden dict itself, later versions the executor's v3 data {"hidden_inputs": ...}."""
    if "v3_data" in inspect.signature(node_cls.PREPARE_CLASS_CLONE).parameters:
        return node_cls.PREPARE_CLASS_CLONE({"hidden_inputs": hidden})
    return node_cls.PREPARE_CLASS_CLONE(hidden)


def _execute(node_cls, hidden: dict | None, inputs: dict):
    from comfy_api.internal import _ComfyNodeInternal

    if inspect.isclass(node_cls) and issubclass(node_cls, _ComfyNodeInternal):
        node_cls.VALIDATE_CLASS()
        clone = prepare_class_clone(node_cls, hidden or {})
        with torch.inference_mode():  # ComfyUI executes every node inside inference mode
            result = getattr(clone, node_cls.FUNCTION)(**inputs)
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
        return tuple(result.result or ()), result.ui
    instance = node_cls()
    with torch.inference_mode():
        result = getattr(instance, node_cls.FUNCTION)(**inputs)
    if isinstance(result, dict):
        return tuple(result.get("result", ())), result.get("ui")
    return tuple(result), None


def run_node(node_cls, hidden: dict | None = None, **inputs):
    """Execute a node class with keyword inputs; return its outputs as a tuple."""
    return _execute(node_cls, hidden, inputs)[0]


def run_node_ui(node_cls, hidden: dict | None = None, **inputs):
    """Execute a node class; return (outputs tuple, ui dict or None)."""
    return _execute(node_cls, hidden, inputs)


def stock_node(name: str):
    """A stock ComfyUI node class by its registered name (e.g. 'KSampler', 'SamplerCustomAdvanced')."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS[name]


def run_api_graph(pack, graph: dict) -> dict:
    """Execute an API-format graph in-process in dependency order; outputs by node id (the server test runs the
    same files through real ComfyUI)."""
    done: dict[str, tuple] = {}

    def run(node_id):
        if node_id not in done:
            node = graph[node_id]
            inputs = {
                key: (
                    run(value[0])[value[1]]
                    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
                    else value
                )
                for key, value in node["inputs"].items()
            }
            cls = pack.by_id.get(node["class_type"]) or stock_node(node["class_type"])
            done[node_id] = run_node(cls, **inputs)
        return done[node_id]

    for node_id in graph:
        run(node_id)
    return done
