"""How many views go through the model at once, from a memory budget and a per-view cost (pure arithmetic).

Two passes need plans:
- the denoising passes (no gradient): cheap per view, so batch as many views as fit;
- the sync gradient pass: every view in a batch keeps its autograd graph (or, checkpointed, its block inputs)
  until its backward pass, so a batch costs ``fixed + n * per_view`` bytes.

Convention: budgets and costs are bytes; a batch size is an int in ``[1, n_views]``. Batches are balanced: 13
views with room for 6 run as 5 + 5 + 3 (three calls either way, smaller peak), never 6 + 6 + 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["views_that_fit", "balanced_batch_size", "batch_sizes", "GradientBatchPlanner"]


def views_that_fit(
    budget_bytes: float, per_view_bytes: float, n_views: int, fixed_bytes: float = 0.0, cap: int | None = None
) -> int:
    """The largest ``n`` in ``[1, min(n_views, cap)]`` with ``fixed + n * per_view <= budget`` (1 when even one view
    does not fit: the caller then runs one view at a time, the least memory there is)."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    limit = n_views if cap is None else max(1, min(n_views, int(cap)))
    if per_view_bytes <= 0:
        return limit
    room = (budget_bytes - fixed_bytes) / per_view_bytes
    if not math.isfinite(room):
        return limit if room > 0 else 1
    return max(1, min(limit, int(room)))


def balanced_batch_size(n_views: int, max_batch: int) -> int:
    """The smallest batch size that needs as few calls as ``max_batch`` does."""
    max_batch = max(1, min(int(max_batch), n_views))
    calls = math.ceil(n_views / max_batch)
    return math.ceil(n_views / calls)


def batch_sizes(n_views: int, max_batch: int) -> list[int]:
    """Balanced batch sizes that add up to ``n_views``."""
    size = balanced_batch_size(n_views, max_batch)
    sizes = []
    left = n_views
    while left > 0:
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes


@dataclass
class GradientBatchPlanner:
    """The gradient-pass plan, as the callable ``sync_views`` asks before each batch: ``planner(remaining) -> n``.

    ``per_view_bytes`` starts as an estimate; :meth:`observe` replaces it with a measured figure (peak bytes of a
    batch / its size, times ``safety``), so later batches are planned from what the device really used.
    ``fixed_bytes`` is what a batch costs regardless of its size (e.g. the anchor image and LPIPS features).
    A fixed ``override`` skips planning.
    """

    budget_bytes: float
    per_view_bytes: float
    cap: int | None = None
    fixed_bytes: float = 0.0
    override: int | None = None
    safety: float = 1.1
    measured: bool = False

    def __call__(self, remaining: int) -> int:
        if remaining < 1:
            raise ValueError(f"remaining must be >= 1, got {remaining}")
        if self.override:
            return max(1, min(int(self.override), remaining))
        fit = views_that_fit(self.budget_bytes, self.per_view_bytes, remaining, self.fixed_bytes, self.cap)
        return balanced_batch_size(remaining, fit)

    def observe(self, views: int, peak_bytes: float) -> None:
        """Record that a batch of ``views`` views peaked at ``peak_bytes`` above what was allocated before it."""
        if views >= 1 and peak_bytes > 0:
            self.per_view_bytes = max(1.0, (peak_bytes - self.fixed_bytes) / views) * self.safety
            self.measured = True

    def shrink(self, views: int) -> None:
        """A batch of ``views`` views ran out of memory: plan at most half of it from now on."""
        self.cap = max(1, views // 2)
        if self.override:
            self.override = max(1, min(int(self.override), views // 2))
