"""The repository carries no machine's absolute paths: locations come from settings or the
environment (EYESCREEN_SHARED, EYESCREEN_DATA_DIR), so a clone works wherever it is."""

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MACHINE_PATH = re.compile(r"(^|[^A-Za-z0-9_.])/(work|farm|home/[a-z]+)/")


def test_no_tracked_file_names_a_machine_path() -> None:
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    offenders = []
    for name in listed:
        path = REPO / name
        if path.suffix in {".pt", ".png", ".jpg", ".npz"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f"{name}:{number}: {line.strip()[:80]}")
    assert offenders == []
