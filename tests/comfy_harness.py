"""Run pack nodes (V3) and stock nodes (V1) in-process the way ComfyUI's executor does.

Only for tests: `run_node(NodeClass, **inputs)` returns the node's output tuple; `run_node_ui` also returns the
`ui` payload (what the frontend and /history would get).
"""

from __future__ import annotations

import asyncio
import inspect

import torch


def _execute(node_cls, hidden: dict | None, inputs: dict):
    from comfy_api.internal import _ComfyNodeInternal

    if inspect.isclass(node_cls) and issubclass(node_cls, _ComfyNodeInternal):
        node_cls.VALIDATE_CLASS()
        clone = node_cls.PREPARE_CLASS_CLONE(hidden or {})
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
