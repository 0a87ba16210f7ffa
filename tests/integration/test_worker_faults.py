"""The worker under real faults, on the production profile (PostgreSQL + Redis) run as
``eyescreen up``: a worker process killed with SIGKILL in the middle of a batch, and Redis
restarted with its queue lost. Every image ends with exactly one prediction."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from services.db.models import Instance, InstanceState
from tests.conftest import run
from tests.running_service import REDIS_DB, Service
from tests.service_harness import wait_for
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("profile", ["postgres-redis", "embedded"])
def test_worker_killed_mid_batch_every_image_read_exactly_once_within_a_minute(
    profile: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With the default lease (30 s) and stale period (10 minutes): the killed worker's images
    are read again within 60 s, through the lease, not the stale-work sweep."""
    defaults = {"EYESCREEN_INFERENCE_LEASE_S": "30", "EYESCREEN_STALE_AFTER_S": "600"}
    if profile == "embedded":
        service = Service(None, None, tmp_path, **defaults)
    else:
        broker = request.getfixturevalue("redis_broker")
        service = Service(
            request.getfixturevalue("postgres_url"), broker.port, tmp_path, **defaults
        )
    try:
        service.send(18, tmp_path)
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            victim = service.scalar(
                select(Instance.claimed_by).where(
                    Instance.claimed_by.is_not(None), Instance.state == InstanceState.RECEIVED
                )
            )
            time.sleep(0.01)
        assert victim, "no batch was seen in flight"
        os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)  # the worker child mid-batch
        killed_at = time.monotonic()
        wait_for(lambda: service.all_read(18), 240, "every image read after the kill", service.log)
        gap = time.monotonic() - killed_at
        assert gap < 60, f"the killed worker's images waited {gap:.0f} s"
        time.sleep(2)
        assert service.predictions_per_instance() == [1] * 18
        assert "signal 9" in service.log.read_text()
    finally:
        service.stop()


def test_redis_restarted_with_its_queue_lost_nothing_is_lost(
    postgres_url: str, redis_broker: TcpProxy, tmp_path: Path
) -> None:
    service = Service(postgres_url, redis_broker.port, tmp_path)
    try:
        service.send(10, tmp_path)
        redis_broker.down()  # Redis stops; it keeps nothing on disk, so its queues are gone
        run(["redis-cli", "-n", REDIS_DB, "FLUSHDB"])
        time.sleep(3)
        redis_broker.up()
        wait_for(lambda: service.all_read(10), 240, "every image read after Redis", service.log)
        time.sleep(2)
        assert service.predictions_per_instance() == [1] * 10
    finally:
        service.stop()
