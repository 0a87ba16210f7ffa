"""``eyescreen up`` as a test drives it: on PostgreSQL + Redis (Redis behind a proxy that a
test can cut) or on the embedded default, with generated photographs sent by DCMTK storescu."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url

from services.db.models import Instance, InstanceState, Prediction
from tests.conftest import REDIS_DB, REDIS_URL, free_port, require_service, run
from tests.dicom_files import write_photo_dicom
from tests.dicom_peers import storescu
from tests.service_harness import start_service, wait_for
from tests.synthetic_photos import generated_fundus_photos
from tests.tcp_proxy import TcpProxy


class Service:
    """``eyescreen up`` on PostgreSQL + Redis (through a proxy), or on the embedded default
    when no database URL is given."""

    def __init__(
        self,
        postgres_url: str | None,
        broker_port: int | None,
        tmp_path: Path,
        port: int | None = None,
        **extra: str,
    ) -> None:
        self.port = port or free_port()
        self.log = tmp_path / "service.log"
        env = dict(
            os.environ,
            EYESCREEN_DATA_DIR=str(tmp_path / "var"),
            EYESCREEN_DICOM_PORT=str(self.port),
            EYESCREEN_DICOM_HOST="127.0.0.1",
            EYESCREEN_WEB_PORT="0",
            EYESCREEN_PDF_REPORTS="false",
            EYESCREEN_TORCH_THREADS="1",
            EYESCREEN_INFERENCE_BATCH_SIZE="6",
            EYESCREEN_INFERENCE_LEASE_S="5",
            EYESCREEN_STALE_AFTER_S="20",
            EYESCREEN_OUTBOX_RESEND_AFTER_S="2",
        )
        if postgres_url is not None:
            env["EYESCREEN_DATABASE_URL"] = postgres_url
            env["EYESCREEN_BROKER_URL"] = f"redis://127.0.0.1:{broker_port}/{REDIS_DB}"
        env.update(extra)
        self.env = env
        self.process = start_service(env, self.log)
        database = postgres_url or f"sqlite:///{tmp_path / 'var' / 'eyescreen.db'}"
        self.engine: Engine = create_engine(database)
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(self.port)]
        wait_for(lambda: run(echo).returncode == 0, 90, "the gateway", self.log)

    def send(self, count: int, folder: Path) -> None:
        photos = generated_fundus_photos(count)
        files = [
            write_photo_dicom(p, folder / f"{n}.dcm") and folder / f"{n}.dcm"
            for n, p in enumerate(photos)
        ]
        result = storescu(self.port, files)
        assert result.returncode == 0, result.stderr[-2000:]

    def scalar(self, query):  # type: ignore[no-untyped-def]
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def predictions_per_instance(self) -> list[int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Instance.id, func.count(Prediction.id))
                .outerjoin(Prediction, Prediction.instance_pk == Instance.id)
                .group_by(Instance.id)
            ).all()
        return [count for _, count in rows]

    def all_read(self, count: int) -> bool:
        done = self.scalar(
            select(func.count())
            .select_from(Instance)
            .where(Instance.state != InstanceState.RECEIVED)
        )
        return done == count

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.engine.dispose()


@pytest.fixture
def redis_broker() -> Iterator[TcpProxy]:
    """Redis behind a proxy a test can cut (its database, REDIS_DB, emptied before and after)."""
    redis = make_url(REDIS_URL.replace("redis://", "redis+x://"))
    require_service("Redis", redis.host or "127.0.0.1", redis.port or 6379)
    run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"])
    proxy = TcpProxy(redis.host or "127.0.0.1", redis.port or 6379)
    yield proxy
    proxy.down()
    run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"])
