"""Sending ORU^R01 messages to an HL7 receiver over MLLP, honouring its ACK: the
``SendReport`` of HL7 deliveries. AA (or CA) is delivered; AE/AR/CE/CR, no ACK, or an ACK
for another message is a failure, which the report service retries and dead-letters."""

from __future__ import annotations

import socket
from collections.abc import Sequence

from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

from services.kernel.settings import MllpNode
from services.reporting.sending import DeliveryError, SendReport

START, END = b"\x0b", b"\x1c\x0d"
ACCEPTED = ("AA", "CA")


def frame(message: bytes) -> bytes:
    return START + message + END


def read_frame(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """One MLLP block from the socket; ``ConnectionError`` if the peer closes first."""
    data = b""
    while END not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the receiver closed the connection without an ACK")
        data += chunk
        if len(data) > limit:
            raise ConnectionError("the receiver's answer is over 1 MiB")
    start = data.find(START)
    return data[start + 1 : data.index(END)]


def acknowledgement(ack: bytes, control_id: str) -> tuple[str, str]:
    """(MSA-1 code, the receiver's text) of an ACK, checked to answer ``control_id``."""
    parsed = parse_message(ack.decode("utf-8", "replace").replace("\n", "\r").strip())
    msa = parsed.msa
    code = msa.msa_1.value
    if msa.msa_2.value != control_id:
        raise DeliveryError(f"ACK answers message {msa.msa_2.value!r}, not {control_id!r}")
    text = msa.msa_3.value if msa.msa_3.value else ""
    return code, text


def _control_id(message: bytes) -> str:
    return message.split(b"\r", 1)[0].decode("utf-8", "replace").split("|")[9]


def send_messages(node: MllpNode, messages: Sequence[bytes], timeout_s: float = 30.0) -> int:
    """Send each message in order, waiting for its ACK; returns how many were accepted,
    raising ``DeliveryError`` (saying how many) at the first that was not. One connection per
    message: many receivers (hl7apy's MLLPServer among them) close after each ACK."""
    accepted = 0
    try:
        for message in messages:
            with socket.create_connection((node.host, node.port), timeout=timeout_s) as sock:
                sock.sendall(frame(message))
                code, text = acknowledgement(read_frame(sock), _control_id(message))
            if code not in ACCEPTED:
                raise DeliveryError(f"{node} answered {code} {text}".strip(), sent=accepted)
            accepted += 1
    except DeliveryError as exc:
        exc.sent = accepted
        raise
    except (OSError, ValueError, IndexError, HL7apyException) as exc:
        raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}", sent=accepted) from exc
    return accepted


def make_mllp_sender(timeout_s: float = 30.0) -> SendReport:
    def send(deliveries: Sequence[Sequence[bytes]], destination: str, _: str = "") -> None:
        """The third argument (a Storage Commitment Transaction UID) has no HL7 meaning."""
        node = MllpNode.parse(destination)
        send_messages(node, [message for objects in deliveries for message in objects], timeout_s)

    return send
