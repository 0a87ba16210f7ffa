"""Asking a PACS before sending a report again: a PACS that offers no C-FIND cannot tell, so
the SR is sent again (same UID); only a PACS that cannot be reached makes the attempt wait.
DCMTK's storescp, which offers storage only, refuses a query association: it used to be taken
for "unreachable", and reports in doubt went on asking until they were dead-lettered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from reports.delivery import make_asker
from services.reporting.sending import DeliveryError
from tests.conftest import free_port
from tests.service_harness import pacs

pytestmark = pytest.mark.integration
__all__ = ["pacs"]  # the fixture


def test_a_pacs_without_c_find_cannot_tell_and_one_not_there_is_an_error(
    pacs: tuple[int, Path],
) -> None:
    port, _ = pacs
    ask = make_asker("EYESCREEN")
    deadline = time.monotonic() + 10
    while True:  # storescp takes a moment to listen
        try:
            answer = ask(["1.2.826.0.1.3680043.8.498.1"], f"PACS@127.0.0.1:{port}")
            break
        except DeliveryError:
            assert time.monotonic() < deadline, "storescp did not start"
            time.sleep(0.2)
    assert answer is None  # cannot tell: the delivery sends the SR again
    with pytest.raises(DeliveryError, match="refused or unreachable"):
        ask(["1.2.826.0.1.3680043.8.498.1"], f"PACS@127.0.0.1:{free_port()}")
