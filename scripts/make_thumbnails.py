"""Template thumbnails: workflows/<name>.jpg from the browser tests' screenshots of each graph.

    python scripts/make_thumbnails.py <artifacts folder printed by the browser tests>

ComfyUI 0.3.75's frontend (1.32.9) asks /api/workflow_templates/<pack>/<name>.jpg for a pack template's
thumbnail. Real weights are not available here, so the thumbnail is a picture of the graph itself (the real
frontend's rendering, cropped to the graph), not of a generated result. Also writes docs/images/<name>.jpg.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    shots = Path((argv or sys.argv[1:])[0])
    docs = REPO_ROOT / "docs" / "images"
    docs.mkdir(parents=True, exist_ok=True)
    for ui in sorted((REPO_ROOT / "workflows").glob("*.json")):
        shot = shots / f"workflow_{ui.stem}.png"
        if not shot.exists():
            print(f"no screenshot for {ui.stem}", file=sys.stderr)
            continue
        with Image.open(shot) as im:
            graph = im.convert("RGB").crop((60, 80, im.width, im.height))
            thumb = graph.copy()
            thumb.thumbnail((512, 512))
            thumb.save(ui.with_suffix(".jpg"), quality=80)
            doc = graph.copy()
            doc.thumbnail((1200, 1200))
            doc.save(docs / f"workflow_{ui.stem}.jpg", quality=80)
        print(f"wrote {ui.with_suffix('.jpg').relative_to(REPO_ROOT)}")
    for name in ("viewer_panel", "run_stereo360_tb"):
        shot = shots / f"{name}.png"
        if shot.exists():
            with Image.open(shot) as im:
                im = im.convert("RGB")
                im.thumbnail((1200, 1200))
                im.save(docs / f"{name}.jpg", quality=80)
    return 0


if __name__ == "__main__":
    sys.exit(main())
