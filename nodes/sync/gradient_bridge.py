"""Gradients inside ComfyUI: nodes run under torch.inference_mode(), so the models' weights are inference tensors.

Autograd refuses to save inference tensors for backward. `grad_enabled()` turns inference mode off, enables grad
and installs a TorchFunctionMode that clones an inference tensor only where it meets a tensor requiring grad (a
weight in a conv/linear/norm on the grad path), and evaluates in-place arithmetic on tensors that require grad
out of place (see below). The model itself is never modified.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

# In-place arithmetic on a tensor that requires grad is evaluated out of place (the result is what `x += y` binds):
# ComfyUI's UNet does `h += ctrl` on a skip tensor the middle block saved for backward, and its ControlNet merge
# does `x *= strength`. Views are left in place: area conditioning accumulates through `narrow` views.
_INPLACE_TO_OUT_OF_PLACE = {
    torch.Tensor.add_: torch.add,
    torch.Tensor.sub_: torch.sub,
    torch.Tensor.mul_: torch.mul,
    torch.Tensor.div_: torch.div,
}


class _CloneInferenceTensorsOnGradPath(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (
            torch.is_grad_enabled()
            and func in _INPLACE_TO_OUT_OF_PLACE
            and isinstance(args[0], torch.Tensor)
            and args[0].requires_grad
            and not args[0]._is_view()
        ):
            return self.__torch_function__(_INPLACE_TO_OUT_OF_PLACE[func], types, args, kwargs)
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
    """Run autograd on ComfyUI-loaded models from inside a node (inference mode off, grad on, weight bridge)."""
    with torch.inference_mode(False), torch.enable_grad(), _CloneInferenceTensorsOnGradPath():
        yield
