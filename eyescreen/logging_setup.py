"""One log format for every process. Logs carry UIDs and states, never patient identifiers."""

from __future__ import annotations

import logging
import os
import warnings


def configure_logging(role: str) -> None:
    from services.kernel.settings import LOG_LEVELS

    # Read before the settings object may exist; validated against the same choices.
    level = os.environ.get("EYESCREEN_LOG_LEVEL", "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise SystemExit(f"EYESCREEN_LOG_LEVEL: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {role:<8} %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    # highdicom logs and warns with attribute values (patient names) while copying modules.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"highdicom\..*")
    for noisy in ("pynetdicom", "kombu", "amqp", "PIL", "matplotlib", "highdicom"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
