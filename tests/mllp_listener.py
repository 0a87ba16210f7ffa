"""A real MLLP listener for tests (hl7apy's MLLPServer): it parses each ORU^R01 with strict
validation, keeps it, and answers the ACK codes it is told to (AA when none is left)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

from tests.conftest import free_port


@dataclass
class Listener:
    port: int
    codes: list[str] = field(default_factory=list)  # ACK codes to answer, in order
    received: list[Message] = field(default_factory=list)  # every message, parsed
    accepted: list[Message] = field(default_factory=list)  # those answered AA
    invalid: list[str] = field(default_factory=list)  # why a message failed validation

    @property
    def destination(self) -> str:
        return f"EHR@127.0.0.1:{self.port}"


def _handler(listener: Listener) -> type[AbstractHandler]:
    class Handler(AbstractHandler):  # type: ignore[misc]
        def reply(self) -> str:
            message = parse_message(self.incoming_message)
            try:
                strict = parse_message(
                    self.incoming_message, validation_level=VALIDATION_LEVEL.STRICT
                )
                strict.validate()
            except HL7apyException as exc:  # not a valid ORU^R01: rejected, as an engine would
                listener.invalid.append(str(exc))
                listener.codes.insert(0, "AR")
            code = listener.codes.pop(0) if listener.codes else "AA"
            listener.received.append(message)
            if code == "AA":
                listener.accepted.append(message)
            ack = Message("ACK", version="2.5")
            ack.msh.msh_3, ack.msh.msh_5 = "EHR", message.msh.msh_3.value
            ack.msh.msh_9 = "ACK^R01^ACK"
            ack.msh.msh_10 = f"ACK{len(listener.received)}"
            ack.msh.msh_11, ack.msh.msh_12 = "P", "2.5"
            ack.msa.msa_1 = code
            ack.msa.msa_2 = message.msh.msh_10.value
            if code != "AA":
                ack.msa.msa_3 = "Patient not found"
            return str(ack.to_mllp())

    return Handler


@contextmanager
def mllp_listener(codes: list[str] | None = None) -> Iterator[Listener]:
    listener = Listener(free_port(), list(codes or []))
    handler = _handler(listener)
    server = MLLPServer(
        "127.0.0.1",
        listener.port,
        {"ORU^R01": (handler,), "ORU^R01^ORU_R01": (handler,)},
        timeout=5,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        server.shutdown()
        server.server_close()
