"""Faults with real processes and real servers: the database and the broker vanish mid-run
(cut by a TCP proxy in front of the real PostgreSQL and Redis); the disk watermark is covered in
test_gateway.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from dicom_gateway import statuses as st
from eyescreen.database import upgrade
from services.db.models import Instance, OutboxMessage, Prediction
from tests.conftest import REDIS_SPARE_DB, REDIS_URL, free_port, require_service, run
from tests.dicom_files import write_photo_dicom
from tests.dicom_peers import storescu
from tests.gateway_harness import Gateway
from tests.service_harness import start_service, stop_service, wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


def _through(url: str, proxy: TcpProxy) -> str:
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )


def test_database_down_during_store_answers_out_of_resources_then_recovers(
    postgres_url: str, fundus_photo: Path, tmp_path: Path
) -> None:
    upgrade(postgres_url)
    real = make_url(postgres_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    gw = Gateway(_through(postgres_url, proxy), tmp_path / "var")
    try:
        first = write_photo_dicom(fundus_photo, tmp_path / "a.dcm")
        second = write_photo_dicom(fundus_photo, tmp_path / "b.dcm")
        assert gw.storescu(tmp_path / "a.dcm") == [st.SUCCESS]
        proxy.down()
        assert gw.storescu(tmp_path / "b.dcm") == [st.OUT_OF_RESOURCES]
        with create_engine(postgres_url).connect() as conn:  # nothing half-written
            uids = conn.execute(text("SELECT sop_instance_uid FROM instance")).scalars().all()
            assert uids == [first.SOPInstanceUID]
            assert conn.execute(text("SELECT count(*) FROM outbox")).scalar() == 1
        proxy.up()
        assert gw.storescu(tmp_path / "b.dcm") == [st.SUCCESS]  # the sender's retry
        with gw.sessions() as session:
            uids = set(session.scalars(select(Instance.sop_instance_uid)))
        assert uids == {first.SOPInstanceUID, second.SOPInstanceUID}
    finally:
        gw.server.shutdown()
        proxy.down()


def test_broker_down_image_accepted_and_processed_after_it_returns(
    postgres_url: str, fundus_photo: Path, tmp_path: Path
) -> None:
    redis = make_url(REDIS_URL.replace("redis://", "redis+x://"))
    require_service("Redis", redis.host or "127.0.0.1", redis.port or 6379)
    proxy = TcpProxy(redis.host or "127.0.0.1", redis.port or 6379)
    database, port = REDIS_SPARE_DB, free_port()
    env = dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(tmp_path / "var"),
        EYESCREEN_DICOM_PORT=str(port),
        EYESCREEN_DICOM_HOST="127.0.0.1",
        EYESCREEN_DATABASE_URL=postgres_url,
        EYESCREEN_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/{database}",
        EYESCREEN_OUTBOX_RESEND_AFTER_S="1",
    )
    run(["redis-cli", "-n", database, "FLUSHDB"])
    log = tmp_path / "service.log"
    service = start_service(env, log)
    engine = create_engine(postgres_url)

    def count(model: type) -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar() or 0)

    try:
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 90, "the gateway", log)
        proxy.down()
        write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
        result = storescu(port, [tmp_path / "op.dcm"])
        assert result.returncode == 0 and "0x0000" in result.stdout + result.stderr
        time.sleep(3)
        assert count(Instance) == 1 and count(Prediction) == 0
        with engine.connect() as conn:
            assert conn.execute(select(OutboxMessage.sent_at)).scalar() is None  # kept, unsent
        proxy.up()
        wait_for(lambda: count(Prediction) == 1, 120, "the prediction after Redis returned", log)
        time.sleep(2)
        assert count(Prediction) == 1
    finally:
        stop_service(service)
        proxy.down()
        engine.dispose()
