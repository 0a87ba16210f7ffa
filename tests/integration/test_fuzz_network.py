"""The gateway against mutated DICOM conversations (fuzz/network.py): every one answered or
closed, the gateway alive and answering C-ECHO, no association slot held after; and the first
thing the fuzzer found, kept as a regression case."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eyescreen.database import upgrade
from fuzz import network
from tests.gateway_harness import Gateway

pytestmark = pytest.mark.integration


@pytest.fixture
def small_gateway(tmp_path: Path) -> Iterator[Gateway]:
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    upgrade(url)
    gateway = Gateway(url, tmp_path / "var", max_associations=4)
    yield gateway
    gateway.server.shutdown()


def _settled(gateway: Gateway, seconds: float = 3.0) -> int:
    """Associations still open once the last connection has had time to close."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not gateway.server.server.active_associations:
            return 0
        time.sleep(0.1)
    return len(gateway.server.server.active_associations)


def test_mutated_conversations_are_answered_or_closed_and_the_gateway_lives(
    small_gateway: Gateway,
) -> None:
    outcome = network.fuzz(small_gateway.port, cases=200, seed=20261128, timeout=10)
    assert outcome.cases == 200 and not outcome.hangs and not outcome.deaths, outcome
    assert len(outcome.by_mutator) == len(network.MUTATORS)  # every kind of damage was tried
    assert _settled(small_gateway) == 0
    assert network.echo(small_gateway.port)


def test_broken_association_requests_do_not_hold_association_slots(
    small_gateway: Gateway, tmp_path: Path
) -> None:
    """An A-ASSOCIATE-RQ with an unknown item type killed pynetdicom's connection thread and
    left the association waiting 30 s (the ACSE timeout) in one of the slots: four such
    requests kept every camera out. The gateway now ends such an association at once."""
    request = network.baselines(small_gateway.port, tmp_path)["1.2.840.10008.1.2.4.50"][0]
    unknown_item = request[:74] + b"\xbd" + request[75:]  # first variable item: type 0xBD
    for _ in range(12):  # three times the slots
        network.send_case(small_gateway.port, [unknown_item], timeout=5, quiet=0.1)
    assert _settled(small_gateway) == 0
    assert network.echo(small_gateway.port, timeout=5)
