"""Where the network's square view lies on a photograph (numpy only, no torch), so that a
Grad-CAM drawn on that view can be put back on the photograph it explains: by the web viewer,
which overlays it on the photo, as much as by the pre-processing that makes the view."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX_KEY = "eyescreen-square"  # a heatmap PNG's text chunk: SquareBox.to_text()
DARK = 12  # a pixel brighter than this in any channel is part of the photograph, not its frame


@dataclass(frozen=True)
class SquareBox:
    """The square the network saw, in the photograph's pixels: its top-left corner (may lie
    outside the photograph where the view was padded) and its side; and the photo's size."""

    x: int
    y: int
    side: int
    width: int
    height: int

    def to_text(self) -> str:
        return f"{self.x},{self.y},{self.side},{self.width},{self.height}"

    @classmethod
    def from_text(cls, text: str) -> SquareBox:
        x, y, side, width, height = (int(v) for v in text.split(","))
        return cls(x, y, side, width, height)


def content_bounds(rgb: np.ndarray, threshold: int = DARK) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends, of the photograph inside its black frame;
    the whole image when there is no frame worth cutting."""
    height, width = rgb.shape[:2]
    mask = rgb.max(axis=2) > threshold
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size < height // 4 or cols.size < width // 4:
        return 0, height, 0, width
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def square_box(rgb: np.ndarray, crop_dark_border: bool = True) -> SquareBox:
    """The square view of ``rgb``: its content (frame cut when asked), padded equally on both
    sides of its short dimension."""
    height, width = rgb.shape[:2]
    top, bottom, left, right = content_bounds(rgb) if crop_dark_border else (0, height, 0, width)
    h, w = bottom - top, right - left
    side = max(h, w)
    return SquareBox(left - (side - w) // 2, top - (side - h) // 2, side, width, height)
