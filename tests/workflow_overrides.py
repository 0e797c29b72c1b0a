"""Shrink a shipped API-format workflow for CPU tests without shipping small graphs.

The workflows ship real settings; tests run the same graphs shrunk by the runner's own shrink
(scripts/comfy_runner/presets.py), smaller than its CPU preset: widest latent 256 px, 3 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
from comfy_runner.presets import Shrink, shrink  # noqa: E402

MAX_TEST_WIDTH = 256
TEST_STEPS = 3


def shrink_workflow(prompt: dict, max_width: int = MAX_TEST_WIDTH, steps: int = TEST_STEPS) -> dict:
    """A copy of `prompt` with generated sizes divided by one factor (widest latent -> <= max_width), steps and
    sync steps capped at `steps`, SyncDiffusion views halved-overlapping, meshes capped at 256x128."""
    return shrink(prompt, Shrink(max_width=max_width, steps=steps, sync_steps=steps))[0]
