"""Whole-image GroupNorm statistics and whole-image attention for tiled VAE passes (pure torch).

Tiling a VAE changes its result mostly through GroupNorm: each tile normalises with its own mean and variance. Here
the tiles run layer-synchronously instead (as ComfyUI-TiledDiffusion's exact mode does): every tile runs the VAE
in its own thread, one thread computing at a time; at each GroupNorm every tile adds the per-group sums over the
part of the image it owns, waits for the others, and normalises with the statistics of the whole image. Attention
blocks (the VAE's mid-block, at the lowest resolution) run once on the whole image: each tile writes the part it
owns into a canvas, one thread runs the block on the canvas, and every tile reads its whole window back, so
overlapping tiles agree there.

Convention:
    Tiles are laid out on a grid of units (latent pixels); an activation of a tile of ``(th, tw)`` units has
    ``(th * f, tw * f)`` pixels for an integer factor ``f`` (1..8 in an SD VAE). ``owned`` regions partition the
    canvas (each unit belongs to one tile: overlaps are split at their middle), so the gathered sums are exactly
    those of the stitched whole image. Columns wrap when ``circular_x``. Variance is the biased one, as in
    ``torch.nn.GroupNorm``; sums in float64.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import torch

Region = tuple[tuple[int, int], tuple[int, int]]  # ((row0, row1), (col0, col1)) in tile units, relative to the tile


def owned_ranges(starts: Sequence[int], tile: int, length: int, circular: bool = False) -> list[tuple[int, int]]:
    """Per tile, the units it owns relative to its start: overlaps split at their middle (module Convention)."""
    n = len(starts)
    if n == 1:
        return [(0, min(tile, length))]
    nxt = [starts[i + 1] if i + 1 < n else (starts[0] + length if circular else None) for i in range(n)]
    cut = [(s + tile + b) // 2 if b is not None else length for s, b in zip(starts, nxt)]  # boundary after tile i
    prev = [cut[i - 1] if i > 0 else (cut[-1] - length if circular else 0) for i in range(n)]
    return [(p - s, c - s) for s, p, c in zip(starts, prev, cut)]


class WholeImageNorm:
    """Run `fn` on tiles with GroupNorm statistics over the whole image and attention on the whole image.

    `norms`: the GroupNorm modules to synchronise; `attentions`: modules run once on the whole canvas (their own
    GroupNorms then see the whole image). Modules are patched only inside `run`."""

    def __init__(self, norms: Sequence[torch.nn.GroupNorm], attentions: Sequence[torch.nn.Module] = ()):
        self.norms = list(norms)
        self.attentions = list(attentions)

    def __bool__(self) -> bool:
        return bool(self.norms or self.attentions)

    def run(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        inputs: Sequence[torch.Tensor],
        origins: Sequence[tuple[int, int]],
        owned: Sequence[Region],
        tile_hw: tuple[int, int],
        canvas_hw: tuple[int, int],
        circular_x: bool = False,
    ) -> list[torch.Tensor]:
        """`fn(inputs[i])` for every tile, synchronised (module Convention); origins in units on the canvas."""
        n = len(inputs)
        state = _State(n, tile_hw, canvas_hw, circular_x)
        results: list = [None] * n
        errors: list[BaseException] = []
        grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def body(i: int) -> None:
            state.local.tile = (origins[i], owned[i])
            state.local.calls, state.local.bypass = 0, False
            with state.run_lock:
                try:
                    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                        results[i] = fn(inputs[i])
                except threading.BrokenBarrierError:
                    pass
                except BaseException as err:  # noqa: BLE001 (re-raised in the caller's thread)
                    errors.append(err)
                    state.barrier.abort()
                finally:
                    state.finished += 1
                    if state.barrier.n_waiting:
                        state.mismatch = True
                        state.barrier.abort()

        originals = {m: m.forward for m in self.norms + self.attentions}
        for m in self.norms:
            m.forward = _norm_forward(m, originals[m], state)
        for m in self.attentions:
            m.forward = _attention_forward(originals[m], state)
        try:
            threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            for m, forward in originals.items():
                del m.forward
                if m.forward != forward:  # pragma: no cover - an instance attribute was there before
                    m.forward = forward
        if errors:
            raise errors[0]
        if state.mismatch or any(r is None for r in results):
            raise RuntimeError("tiled VAE: tiles went through different layers; cannot share GroupNorm statistics")
        return results


class _State:
    def __init__(self, n: int, tile_hw: tuple[int, int], canvas_hw: tuple[int, int], circular_x: bool):
        self.n, self.tile_hw, self.canvas_hw, self.circular_x = n, tile_hw, canvas_hw, circular_x
        self.run_lock = threading.Lock()
        self.barrier = threading.Barrier(n)
        self.local = threading.local()
        self.sums: dict[int, list] = {}
        self.canvases: dict[int, torch.Tensor] = {}
        self.finished = 0
        self.mismatch = False

    def factor(self, x: torch.Tensor) -> int:
        f, rest = divmod(x.shape[-1], self.tile_hw[1])
        if rest or f < 1 or x.shape[-2] != self.tile_hw[0] * f:
            raise RuntimeError(f"tiled VAE: activation {tuple(x.shape[-2:])} is not a multiple of the tile")
        return f

    def wait(self) -> int:
        """Wait for every tile at this point (no thread computes meanwhile); returns the barrier index."""
        if self.finished:
            self.mismatch = True
            self.barrier.abort()
        self.run_lock.release()
        try:
            return self.barrier.wait()
        finally:
            self.run_lock.acquire()

    def next_call(self, x: torch.Tensor) -> tuple[int, tuple, int] | None:
        """Inside a tile pass, a patched module's call: (its key, the order of calls in the pass; the tile;
        the activation's size factor). None outside one (bypassed: the module runs as it is)."""
        local = self.local
        if getattr(local, "bypass", True):
            return None
        key = local.calls
        local.calls += 1
        return key, local.tile, self.factor(x)

    def columns(self, x0: int, count: int, f: int, device: torch.device) -> torch.Tensor:
        cols = x0 * f + torch.arange(count * f, device=device)
        return cols % (self.canvas_hw[1] * f) if self.circular_x else cols


def _norm_forward(module: torch.nn.GroupNorm, original: Callable, state: _State) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        call = state.next_call(x)
        if call is None:
            return original(x)
        key, (_, ((r0, r1), (c0, c1))), f = call
        b, g = x.shape[0], module.num_groups
        part = x[..., r0 * f : r1 * f, c0 * f : c1 * f].reshape(b, g, -1).double()
        entry = state.sums.setdefault(key, [0.0, 0.0, 0])
        entry[0] = entry[0] + part.sum(-1)
        entry[1] = entry[1] + (part * part).sum(-1)
        entry[2] += part.shape[-1]
        state.wait()
        total, squares, count = state.sums[key]
        mean = total / count
        var = (squares / count - mean * mean).clamp_min(0)
        xg = x.reshape(b, g, -1)
        y = ((xg - mean[..., None].to(x.dtype)) * torch.rsqrt(var[..., None] + module.eps).to(x.dtype)).reshape(x.shape)
        if module.affine:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = y * module.weight.to(x).reshape(shape) + module.bias.to(x).reshape(shape)
        return y

    return forward


def _attention_forward(original: Callable, state: _State) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        call = state.next_call(x)
        if call is None:
            return original(x)
        key, ((y0, x0), ((r0, r1), (c0, c1))), f = call
        th, tw = state.tile_hw
        canvas = state.canvases.get(key)
        if canvas is None:
            h, w = state.canvas_hw
            canvas = state.canvases[key] = x.new_zeros(x.shape[0], x.shape[1], h * f, w * f)
        cols = state.columns(x0 + c0, c1 - c0, f, x.device)
        canvas[:, :, (y0 + r0) * f : (y0 + r1) * f].index_copy_(3, cols, x[..., r0 * f : r1 * f, c0 * f : c1 * f])
        if state.wait() == 0:
            state.local.bypass = True
            try:
                state.canvases[key] = original(canvas)
            finally:
                state.local.bypass = False
        state.wait()
        out = state.canvases[key][:, :, y0 * f : (y0 + th) * f]
        return out.index_select(3, state.columns(x0, tw, f, x.device))

    return forward
