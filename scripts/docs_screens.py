"""Copy the most telling screenshots of the reader's screen (made by
tests/integration/test_webapp_reader.py into test-artifacts/screens, which git ignores) to
docs/screens as small palette PNGs.

    python -m pytest tests/integration/test_webapp_reader.py -k screenshots
    python scripts/docs_screens.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SOURCE, TARGET = ROOT / "test-artifacts" / "screens", ROOT / "docs" / "screens"
CHOSEN = (
    "worklist-1366x768",
    "case-1366x768",
    "arbitration-overlay-1366x768",
    "arbitration-overlay-1920x1080",
)


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for name in CHOSEN:
        with Image.open(SOURCE / f"{name}.png") as shot:
            small = shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
            small.save(TARGET / f"{name}.png", optimize=True)
        print(f"docs/screens/{name}.png: {(TARGET / f'{name}.png').stat().st_size >> 10} KiB")


if __name__ == "__main__":
    main()
