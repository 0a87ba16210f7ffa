"""Fixtures shared by the integration tests."""

from tests.gateway_harness import gateway

__all__ = ["gateway"]
