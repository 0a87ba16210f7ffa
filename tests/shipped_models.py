"""The shipped fundus model for workflow tests that need its read of a *drawn* picture.

The pictures of ``tests/synthetic_photos.py`` are drawings, not photographs: model 1.4's guard
against the unfamiliar calls every one of them "not assessable by this model" (ungradable,
referred), which is right for the product and leaves no findings for a grader to agree or
disagree with. Tests about people and their reads (concordance, arbitration, verified labels)
use the same weights, thresholds and calibration without the guard; tests of the guard itself
use the shipped file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SHIPPED_FUNDUS = Path(__file__).resolve().parents[1] / "ml" / "models" / "fundus.pt"


def unguarded_fundus() -> Path:
    """A copy of the shipped fundus checkpoint without its guard, made once per process."""
    from ml.checkpoint import load_checkpoint, save_checkpoint

    target = Path(tempfile.gettempdir()) / f"eyescreen-fundus-unguarded-{os.getpid()}.pt"
    if not target.exists():
        meta, model = load_checkpoint(SHIPPED_FUNDUS)
        meta.pop("guard", None)
        meta["version"] = f"{meta['version']}-unguarded-for-tests"
        save_checkpoint(target, meta, model)
    return target
