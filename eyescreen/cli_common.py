"""What every ``eyescreen`` command shares: reading the settings with readable errors."""

from __future__ import annotations

import click
from pydantic import ValidationError

from services.kernel.settings import Settings, load_settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [
            f"  EYESCREEN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None
