"""Gradient checkpointing of chosen sub-modules, for the duration of a ``with`` block (pure torch).

The sync gradient pass differentiates through the denoiser, the decoder and LPIPS. Plain autograd keeps every
intermediate activation until the backward pass; with checkpointing only each block's inputs are kept and the
block is run again during the backward pass (``torch.utils.checkpoint``, non-reentrant). The gradients are the same
computation, so they agree with plain autograd to float tolerance; memory drops to roughly the block inputs plus one
block's activations, at the price of one extra forward of the checkpointed blocks.

In-place updates and recomputation: the recomputation must see the values the forward saw.
- A block runs on copies of its tensor arguments, so code after the block that updates them in place (ComfyUI's
  UNet: ``h += control``) cannot change what the recomputation reads.
- Inside a block, an augmented assignment (``x += y``: the caller's bytecode binds the result) on a tensor that
  requires grad is evaluated out of place, which binds the same value (Flux blocks: ``img += ...``).
- Any other in-place update of a tensor that requires grad inside a block (a bare ``t.add_(y)``, ``t[i] = v``)
  could change a tensor autograd saved; that call of the block falls back to plain autograd (exact, no saving).

Modules are never changed outside the ``with`` block: an instance-level ``forward`` is installed on entry and the
previous state is restored on exit, also when the block raises (e.g. an interrupt).
"""

from __future__ import annotations

import contextlib
import dis
import functools
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed", "outermost_modules"]

_MISSING = object()
_OUT_OF_PLACE = {
    torch.Tensor.add_: torch.add,
    torch.Tensor.sub_: torch.sub,
    torch.Tensor.mul_: torch.mul,
    torch.Tensor.div_: torch.div,
}


def outermost_modules(root: nn.Module, class_names: Iterable[str]) -> list[nn.Module]:
    """The modules under ``root`` (``root`` included) whose class name is in ``class_names``, skipping any that sit
    inside another match, in ``named_modules`` order."""
    wanted = set(class_names)
    found: list[nn.Module] = []
    taken: list[str] = []
    for name, module in root.named_modules():
        if type(module).__name__ not in wanted:
            continue
        if any(t == "" or name.startswith(t + ".") for t in taken):
            continue
        found.append(module)
        taken.append(name)
    return found


class _InPlaceUpdate(Exception):
    """Raised inside a checkpointed block's forward at an in-place update that recomputation could not replay."""


@functools.lru_cache(maxsize=4096)
def _is_augmented_assignment(code: types.CodeType, offset: int) -> bool:
    for ins in dis.get_instructions(code):
        if ins.offset == offset:
            return ins.opname.startswith("INPLACE_") or (ins.opname == "BINARY_OP" and ins.argrepr.endswith("="))
    return False


def _caller_binds_result() -> bool:
    """Whether the Python code that triggered the current torch function is an augmented assignment (``x += y``)."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_code.co_name == "__torch_function__":  # other modes on the stack
        frame = frame.f_back
    return frame is not None and _is_augmented_assignment(frame.f_code, frame.f_lasti)


def _is_inplace(func: Callable) -> bool:
    name = getattr(func, "__name__", "")
    return name == "__setitem__" or (name.endswith("_") and not name.startswith("_"))


class _ReplayableInPlace(TorchFunctionMode):
    """Inside a checkpointed block: ``x += y`` out of place; other in-place updates of grad tensors raise
    `_InPlaceUpdate` in the forward (the block then runs under plain autograd)."""

    def __init__(self, forward: bool):
        super().__init__()
        self.forward = forward

    def __torch_function__(self, func: Callable, types: tuple, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        target = args[0] if args else None
        if torch.is_grad_enabled() and isinstance(target, torch.Tensor) and target.requires_grad and _is_inplace(func):
            if func in _OUT_OF_PLACE and _caller_binds_result():
                return _OUT_OF_PLACE[func](*args, **kwargs)
            if self.forward:
                raise _InPlaceUpdate(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def _copy(value: object) -> object:
    """A tensor argument's copy (containers are passed as they are: only a block's own tensor arguments are what
    the caller may update in place after the block)."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def _checkpointing_forward(original: Callable, context: Callable[[], AbstractContextManager] | None) -> Callable:
    def run(state: dict, *args, **kwargs):
        forward = state["forward"]
        state["forward"] = False  # later calls are the recomputation in the backward pass
        with context() if context is not None else contextlib.nullcontext(), _ReplayableInPlace(forward):
            return original(*args, **kwargs)

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        copies, kwcopies = [_copy(a) for a in args], {k: _copy(v) for k, v in kwargs.items()}
        try:
            return checkpoint(
                run, {"forward": True}, *copies, use_reentrant=False, preserve_rng_state=False, **kwcopies
            )
        except _InPlaceUpdate:
            return original(*args, **kwargs)

    return forward


@contextlib.contextmanager
def checkpointed(
    modules: Iterable[nn.Module], enabled: bool = True, context: Callable[[], AbstractContextManager] | None = None
) -> Iterator[int]:
    """Run each module in ``modules`` under gradient checkpointing while the block runs; yields how many modules are
    checkpointed. Calls made with grad disabled go straight to the module. Duplicates are ignored.

    ``context``: a factory of a context manager entered around every (re)computation of a block. The recomputation
    runs inside the backward pass, where context that was active around the forward call may not be (e.g. a
    ``TorchFunctionMode`` is switched off while it handles ``torch.autograd.grad``)."""
    if not enabled:
        yield 0
        return
    saved: list[tuple[nn.Module, object]] = []
    seen: set[int] = set()
    try:
        for module in modules:
            if id(module) in seen:
                continue
            seen.add(id(module))
            previous = module.__dict__.get("forward", _MISSING)
            saved.append((module, previous))
            module.forward = _checkpointing_forward(module.forward, context)
        yield len(saved)
    finally:
        for module, previous in reversed(saved):
            if previous is _MISSING:
                module.__dict__.pop("forward", None)
            else:
                module.forward = previous
