"""Gradient checkpointing of chosen sub-modules, for the duration of a ``with`` block (pure torch).

The sync gradient pass differentiates through the denoiser, the decoder and LPIPS. Plain autograd keeps every
intermediate activation until the backward pass; with checkpointing only each block's inputs are kept and the
block is run again during the backward pass (``torch.utils.checkpoint``, non-reentrant). The gradients are the same
computation, so they agree with plain autograd to float tolerance; memory drops to roughly the block inputs plus one
block's activations, at the price of one extra forward of the checkpointed blocks.

Modules are never changed outside the ``with`` block: an instance-level ``forward`` is installed on entry and the
previous state is restored on exit, also when the block raises (e.g. an interrupt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed", "outermost_modules"]

_MISSING = object()


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


def _checkpointing_forward(original: Callable, context: Callable[[], AbstractContextManager] | None) -> Callable:
    if context is not None:

        def run(*args, **kwargs):
            with context():
                return original(*args, **kwargs)
    else:
        run = original

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        return checkpoint(run, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)

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
