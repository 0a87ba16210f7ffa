"""The service as a user runs it (``eyescreen up``) and DCMTK storescp as the PACS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, require_binary


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """DCMTK storescp standing in for the hospital PACS."""
    require_binary("/usr/bin/storescp")
    port, inbox = free_port(), tmp_path / "pacs"
    inbox.mkdir()
    proc = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "PACS", "-od", str(inbox), str(port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    yield port, inbox
    proc.terminate()
    proc.wait(10)


def start_service(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "eyescreen", "up"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; service log:\n{log.read_text()[-4000:]}")


def eyescreen(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run an ``eyescreen`` command as an operator would, with this interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "eyescreen", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def service_env(tmp_path: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of a service under test: data in ``tmp_path/var``, DICOM on ``port``;
    ``settings`` are EYESCREEN_* variables without the prefix, in lower case."""
    env = dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(tmp_path / "var"),
        EYESCREEN_DICOM_PORT=str(port),
        EYESCREEN_DICOM_HOST="127.0.0.1",
        EYESCREEN_WEB_PORT="0",  # no web application unless a test asks for one
    )
    env.update({f"EYESCREEN_{name.upper()}": value for name, value in settings.items()})
    return env


def stop_service(service: subprocess.Popen[bytes]) -> int:
    """Ctrl-C, as an operator would; killed if it has not stopped within a minute."""
    service.send_signal(signal.SIGINT)
    try:
        return service.wait(60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait(10)
        pytest.fail("eyescreen up did not stop on Ctrl-C within 60 s")
