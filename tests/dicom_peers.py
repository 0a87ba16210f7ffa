"""DCMTK as the peer: storescu proposing every syntax the gateway accepts (via a config file)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from tempfile import gettempdir

from dicom_gateway.conformance import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from tests.conftest import require_binary, run

DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}


@cache
def storescu_config() -> Path:
    """A storescu association profile: one context per (SOP class, transfer syntax)."""
    lines = ["[[TransferSyntaxes]]"]
    for n, syntax in enumerate(TRANSFER_SYNTAXES, 1):
        lines += [f"[TS{n}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    number = 1
    for sop_class in STORAGE_SOP_CLASSES:
        for n in range(1, len(TRANSFER_SYNTAXES) + 1):
            lines.append(f"PresentationContext{number} = {sop_class}\\TS{n}")
            number += 1
    lines += ["[[Profiles]]", "[Eyescreen]", "PresentationContexts = Contexts"]
    path = Path(gettempdir()) / "eyescreen-storescu.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path


def storescu(
    port: int,
    files: Iterable[Path],
    calling: str = "CAMERA",
    extra: Iterable[str] = (),
    host: str = "127.0.0.1",
    all_syntaxes: bool = True,
) -> subprocess.CompletedProcess[str]:
    require_binary("/usr/bin/storescu")
    command = ["/usr/bin/storescu", "-d"]
    if all_syntaxes:
        command += ["-xf", str(storescu_config()), "Eyescreen"]
    command += ["-aet", calling, "-aec", "EYESCREEN", *extra, host, str(port)]
    return run([*command, *map(str, files)], env=DCMTK_ENV)
