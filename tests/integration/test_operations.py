"""Operations: Prometheus metrics and health checks of a running service (``eyescreen up``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from eyescreen.ops_server import serve, standard_checks
from services.kernel.settings import Settings
from tests.conftest import free_port, run
from tests.dicom_files import write_photo_dicom
from tests.dicom_peers import storescu
from tests.service_harness import service_env, start_service, stop_service, wait_for

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _exposed(text: str, line_start: str) -> float | None:
    """A metric's value, or None while it is not exposed (yet)."""
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return None


def _metric(text: str, line_start: str) -> float:
    """A metric's value; a missing one fails (reading it as 0 would pass "== 0" unregistered)."""
    value = _exposed(text, line_start)
    if value is None:
        raise AssertionError(f"metric {line_start!r} is not exposed")
    return value


def test_metrics_and_health_of_a_running_service(fundus_photo: Path, tmp_path: Path) -> None:
    port, worker_port, gateway_port = free_port(), free_port(), free_port()
    env = service_env(
        tmp_path,
        port,
        metrics_port=str(worker_port),
        gateway_metrics_port=str(gateway_port),
        pdf_reports="false",
    )
    log = tmp_path / "service.log"
    service = start_service(env, log)
    try:
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 60, "the gateway", log)
        write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
        assert storescu(port, [tmp_path / "op.dcm"]).returncode == 0
        read = 'eyescreen_images_read_total{outcome="predicted",route="fundus"}'
        wait_for(
            lambda: _exposed(_get(worker_port, "/metrics")[1], read) == 1.0,
            120,
            "the worker's metrics",
            log,
        )
        metrics = _get(worker_port, "/metrics")[1]
        assert _metric(metrics, "eyescreen_batch_size_count") == 1.0
        assert _metric(metrics, "eyescreen_image_latency_seconds_count") == 1.0
        assert _metric(metrics, 'eyescreen_work_waiting{kind="images"}') == 0.0
        gateway = _get(gateway_port, "/metrics")[1]
        assert _metric(gateway, 'eyescreen_cstore_total{status="0x0000"}') == 1.0
        for ops_port in (worker_port, gateway_port):
            status, body = _get(ops_port, "/healthz")
            assert status == 200 and json.loads(body)["healthy"], body
    finally:
        stop_service(service)


def test_health_says_which_dependency_is_down(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        broker_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
    )
    settings.ensure_dirs()
    port = free_port()
    server = serve(port, CollectorRegistry(), standard_checks(settings))
    try:
        status, body = _get(port, "/healthz")
        checks = json.loads(body)["checks"]
        assert status == 503 and checks["database"] == "ok" and checks["broker"] != "ok"
    finally:
        server.shutdown()
