"""Headless runs at scale: a workflow, one job or a batch, over one or many ComfyUI servers.

    .venv/bin/python scripts/run_batch.py --help

The code lives in scripts/comfy_runner/ (see its __init__ for the map); this file only puts scripts/ on the path.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comfy_runner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
