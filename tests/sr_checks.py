"""Validating an SR the three ways the issue asks: dciodvfy, DCMTK dsrdump, highdicom's parser."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd

from tests.conftest import require_binary, run


def assert_valid_dicom(path: Path) -> None:
    """dicom3tools' dciodvfy: no errors (warnings about our private coding scheme are fine)."""
    require_binary("/usr/bin/dciodvfy")
    result = run(["/usr/bin/dciodvfy", str(path)])
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
    assert errors == [], "\n".join(errors)


def assert_valid_sr(path: Path) -> hd.sr.Comprehensive3DSR:
    assert_valid_dicom(path)
    require_binary("/usr/bin/dsrdump")
    dump = run(["/usr/bin/dsrdump", "+Pu", str(path)])  # strict: no -E relaxations
    assert dump.returncode == 0, dump.stderr
    assert "E:" not in dump.stderr and "W:" not in dump.stderr, dump.stderr
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    return sr
