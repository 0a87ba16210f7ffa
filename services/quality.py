"""Image-quality gate: photographs too dark, overexposed, blurred or empty are "ungradable".

Cheap statistics on a downscaled grey image; an ungradable image is referred, never passed.
"""

from __future__ import annotations

import numpy as np

GRADABLE = "gradable"


def assess(rgb: np.ndarray) -> str:
    grey = rgb.astype(np.float32).mean(axis=2)
    step = max(1, min(grey.shape) // 256)
    grey = grey[::step, ::step]
    content = grey > 12
    if content.mean() < 0.05:
        return "ungradable:empty"
    level = float(grey[content].mean())
    if level < 25:
        return "ungradable:dark"
    if level > 240:
        return "ungradable:overexposed"
    laplacian = (
        -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    )
    if float(laplacian[content[1:-1, 1:-1]].var()) < 2.0:
        return "ungradable:blurred"
    return GRADABLE
