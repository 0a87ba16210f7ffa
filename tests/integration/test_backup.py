"""Backup while the service runs, restore into a new installation: the same study export, no
report sent twice, and the restored service goes on working (embedded and production profiles)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from eyescreen.processes import SWEEP_EVERY_S
from services.db.models import DeliveryState, ReportDelivery
from tests.conftest import fresh_postgres_database
from tests.running_service import Service
from tests.service_harness import eyescreen, pacs, wait_for

pytestmark = pytest.mark.integration
__all__ = ["pacs"]  # the fixture


def _delivered(service: Service) -> int:
    pending = service.scalar(
        select(func.count())
        .select_from(ReportDelivery)
        .where(ReportDelivery.state != DeliveryState.DELIVERED)
    )
    done = service.scalar(select(func.count()).select_from(ReportDelivery))
    return done if pending == 0 else -1


def _export(env: dict[str, str], out: Path) -> dict[str, bytes]:
    done = eyescreen("stats", "export", str(out), "--replicates", "20", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.csv"))}


@pytest.mark.parametrize("profile", ["embedded", "postgres-redis"])
def test_backup_while_running_restores_to_the_same_export_and_resends_nothing(
    profile: str, request: pytest.FixtureRequest, pacs: tuple[int, Path], tmp_path: Path
) -> None:
    pacs_port, inbox = pacs
    destination = {"EYESCREEN_SR_DESTINATIONS": f"PACS@127.0.0.1:{pacs_port}"}
    database = request.getfixturevalue("postgres_url") if profile != "embedded" else None
    broker = request.getfixturevalue("redis_broker").port if database else None
    first, second, backup = tmp_path / "first", tmp_path / "second", tmp_path / "backup"
    first.mkdir()
    second.mkdir()

    service = Service(database, broker, first, **destination)
    try:
        service.send(4, first)
        wait_for(
            lambda: service.all_read(4) and _delivered(service) > 0, 180, "reports", service.log
        )
        before = _export(service.env, tmp_path / "export-before")  # makes the pseudonym key
        made = eyescreen("backup", "create", str(backup), env=service.env)  # while it runs
        assert made.returncode == 0, made.stderr[-2000:]
    finally:
        service.stop()
    delivered = _delivered(service)
    sent_before = sorted(p.name for p in inbox.iterdir())
    assert len(sent_before) == delivered > 0
    # storescp names a file by its SOP instance UID: an SR sent again would be written again
    written = {p.name: p.stat().st_mtime_ns for p in inbox.iterdir()}

    verified = eyescreen("backup", "verify", str(backup), env=service.env)
    assert verified.returncode == 0 and "all intact" in verified.stdout, verified.stderr

    with fresh_postgres_database("restored") if database else _no_database() as restored_url:
        restored_env = dict(service.env, EYESCREEN_DATA_DIR=str(second / "var"))
        if restored_url:
            restored_env["EYESCREEN_DATABASE_URL"] = restored_url
        refused = eyescreen("backup", "restore", str(backup), env=restored_env)
        assert refused.returncode != 0 and "--yes" in refused.stderr  # asks first
        done = eyescreen("backup", "restore", str(backup), "--yes", env=restored_env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert _export(restored_env, tmp_path / "export-after") == before

        again = Service(restored_url, broker, second, **destination)
        started = time.monotonic()
        try:
            (second / "new").mkdir()
            again.send(2, second / "new")  # and it goes on working
            wait_for(
                lambda: again.all_read(6) and _delivered(again) > delivered,
                180,
                "the restored service to read and report new photographs",
                again.log,
            )
            # The gateway sweeps every SWEEP_EVERY_S (5 s) and re-sends an unsent outbox row
            # after 2 s: three sweeps and a start-up's margin since the restored service
            # started, and nothing restored was sent again; only the new photographs' reports.
            time.sleep(max(0.0, started + 3 * SWEEP_EVERY_S + 3 - time.monotonic()))
            assert again.predictions_per_instance() == [1] * 6
            sent_after = sorted(p.name for p in inbox.iterdir())
            assert set(sent_before) < set(sent_after)
            assert len(sent_after) == _delivered(again)  # each new report once
            rewritten = [n for n in sent_before if (inbox / n).stat().st_mtime_ns != written[n]]
            assert rewritten == []  # nothing restored sent twice
        finally:
            again.stop()


@contextmanager
def _no_database() -> Iterator[None]:
    yield None
