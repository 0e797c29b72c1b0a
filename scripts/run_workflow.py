"""Kept for old commands: the same as scripts/run_batch.py (one workflow, one job, same options)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_runner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
