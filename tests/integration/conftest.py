"""Fixtures shared by the integration tests."""

from tests.gateway_harness import gateway
from tests.running_service import redis_broker

__all__ = ["gateway", "redis_broker"]
