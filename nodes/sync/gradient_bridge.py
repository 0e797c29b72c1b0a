"""Gradients inside ComfyUI: nodes run under torch.inference_mode(), so the models' weights are inference tensors.

Autograd refuses to save inference tensors for backward. `grad_enabled()` turns inference mode off, enables grad
and installs a TorchFunctionMode that clones an inference tensor only where it meets a tensor requiring grad (a
weight in a conv/linear/norm on the grad path). In-place updates keep their meaning: autograd is allowed to see a
saved tensor updated in place (`torch.autograd.graph.allow_mutation_on_saved_tensors`: the saved value is kept
aside first), so ComfyUI's `h += ctrl` on a skip tensor or `sim.add_(mask)` in attention differentiate exactly as
outside inference mode. Checkpointed blocks handle in-place updates themselves (sync_core.checkpointing).
ComfyUI's own differentiable code paths are selected during the pass (comfy_compat.differentiable_paths).
The model itself is never modified.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

from ..shared import comfy_compat


class _CloneInferenceTensorsOnGradPath(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_grad_enabled():
            flat, spec = tree_flatten((args, kwargs))
            tensors = [t for t in flat if isinstance(t, torch.Tensor)]
            if any(t.requires_grad for t in tensors) and any(t.is_inference() for t in tensors):
                flat = [t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t for t in flat]
                args, kwargs = tree_unflatten(flat, spec)
        return func(*args, **kwargs)


def weight_bridge() -> TorchFunctionMode:
    """The bridge alone (for code that re-runs model blocks later, e.g. checkpointed recomputation in the backward
    pass, where the bridge entered around `autograd.grad` is switched off while autograd runs)."""
    return _CloneInferenceTensorsOnGradPath()


@contextlib.contextmanager
def grad_enabled():
    """Run autograd on ComfyUI-loaded models from inside a node (inference mode off, grad on, weight bridge,
    in-place updates of saved tensors allowed, ComfyUI's differentiable paths). Backward passes must run inside."""
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        comfy_compat.differentiable_paths(),
        torch.autograd.graph.allow_mutation_on_saved_tensors(),
        _CloneInferenceTensorsOnGradPath(),
    ):
        yield
