"""Prometheus metrics of the service. Worker children write to a shared folder
(``PROMETHEUS_MULTIPROC_DIR``, set by ``eyescreen worker`` before anything imports this), the
serving process adds them up; queue depths are read from the database when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import (
    DeliveryState,
    Instance,
    InstanceState,
    OutboxMessage,
    ReportDelivery,
)

C_STORES = Counter("eyescreen_cstore", "C-STORE requests answered, by status", ["status"])
IMAGES_READ = Counter("eyescreen_images_read", "Images read by the model", ["route", "outcome"])
INFERENCE_SECONDS = Histogram(
    "eyescreen_inference_seconds",
    "Forward pass time per batch",
    ["route"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "eyescreen_batch_size", "Images per forward pass", buckets=(1, 2, 4, 8, 16, 32, 64)
)
IMAGE_LATENCY = Histogram(
    "eyescreen_image_latency_seconds",
    "From receipt to recorded prediction",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
TASK_ERRORS = Counter("eyescreen_task_errors", "Task failures and retries", ["task", "kind"])
DELIVERIES = Counter("eyescreen_report_deliveries", "Report delivery attempts", ["outcome"])


class WorkWaiting(Collector):
    """Queue depth as the database sees it: images waiting to be read, deliveries pending,
    outbox rows not yet handed to the broker."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The work waiting, read from the database at scrape time."""
        waiting = GaugeMetricFamily(
            "eyescreen_work_waiting", "Work not yet done, by kind", labels=["kind"]
        )
        with self.sessions() as session:
            counts = {
                "images": select(func.count()).where(Instance.state == InstanceState.RECEIVED),
                "deliveries": select(func.count()).where(
                    ReportDelivery.state == DeliveryState.PENDING
                ),
                "dead_deliveries": select(func.count()).where(
                    ReportDelivery.state == DeliveryState.DEAD
                ),
                "outbox": select(func.count()).where(OutboxMessage.sent_at.is_(None)),
            }
            for kind, query in counts.items():
                waiting.add_metric([kind], float(session.scalar(query) or 0))
        yield waiting
