"""Network fuzzer for the DICOM gateway: a real SCU's conversation, mutated, sent raw.

    .venv/bin/python -m fuzz.network --port 11112 [--cases 500] [--seed 1] [--save DIR]

First a real SCU (pynetdicom) stores a generated photograph through a recording proxy, once per
transfer syntax, so the fuzzer holds real A-ASSOCIATE-RQ, P-DATA-TF and A-RELEASE-RQ PDUs. Each
case then mutates one conversation (bytes of the association request, PDU lengths and types,
the command or the data set fragments, presentation context ids, message control headers, a
data set in another transfer syntax than the one negotiated, a conversation cut short), sends
it on a new connection, half-closes, and waits for the gateway to close its side. The gateway
must answer or close within ``--timeout`` seconds (else: a hang), and answer a C-ECHO within as
long every ten cases (else: it died or is stuck). Failing cases are written to ``--save``; each
one found is fixed and kept as a test (``tests/integration/test_fuzz_network.py``).
"""

from __future__ import annotations

import argparse
import random
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

Conversation = list[bytes]  # PDUs, as the client sent them
VERIFICATION = "1.2.840.10008.1.1"
SYNTAXES = (
    "1.2.840.10008.1.2.4.50",  # JPEG baseline: as cameras send
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
)


def split_pdus(stream: bytes) -> Conversation:
    """PDUs of a byte stream: type (1), reserved (1), length (4, big endian), body."""
    pdus, offset = [], 0
    while offset + 6 <= len(stream):
        length = struct.unpack(">I", stream[offset + 2 : offset + 6])[0]
        pdus.append(stream[offset : offset + 6 + length])
        offset += 6 + length
    return pdus


def record_conversation(port: int, dataset_path: Path, syntax: str) -> Conversation:
    """Store one data set through a proxy that keeps what the client sent."""
    sent = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    proxy_port = listener.getsockname()[1]

    def pump(source: socket.socket, target: socket.socket, keep: bool) -> None:
        try:
            while data := source.recv(65536):
                if keep:
                    sent.extend(data)
                target.sendall(data)
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the other side closed first

    def serve() -> None:
        client, _ = listener.accept()
        upstream = socket.create_connection(("127.0.0.1", port))
        threads = [
            threading.Thread(target=pump, args=(client, upstream, True), daemon=True),
            threading.Thread(target=pump, args=(upstream, client, False), daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        client.close()
        upstream.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    ds = dcmread(dataset_path)
    ae = AE(ae_title="FUZZER")
    ae.add_requested_context(ds.SOPClassUID, syntax)
    assoc = ae.associate("127.0.0.1", proxy_port, ae_title="EYESCREEN")
    if not assoc.is_established:
        raise RuntimeError(f"the gateway refused {syntax}")
    if syntax != ds.file_meta.TransferSyntaxUID:
        ds = _in_syntax(ds, syntax)
    assoc.send_c_store(ds)
    assoc.release()
    server.join(30)
    listener.close()
    return split_pdus(bytes(sent))


def _in_syntax(ds, syntax: str):  # type: ignore[no-untyped-def]
    """The data set re-encoded in another transfer syntax (pixels decompressed)."""
    from io import BytesIO

    from pydicom.uid import UID

    ds.decompress()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.set_original_encoding(None, None)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue()))


@dataclass
class Mutator:
    """One kind of damage, applied with the case's random generator."""

    name: str
    apply: Callable[[random.Random, dict[str, Conversation]], Conversation]


def _flip(rng: random.Random, data: bytes, start: int = 0, count: int = 4) -> bytes:
    damaged = bytearray(data)
    for _ in range(rng.randint(1, count)):
        position = rng.randrange(start, len(damaged)) if len(damaged) > start else 0
        damaged[position] = rng.randrange(256)
    return bytes(damaged)


def _pick(rng: random.Random, baselines: dict[str, Conversation]) -> Conversation:
    return list(baselines[rng.choice(sorted(baselines))])


def _data_pdus(conversation: Conversation) -> list[int]:
    return [n for n, pdu in enumerate(conversation) if pdu[0] == 0x04]


def mutate_association_request(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    conversation[0] = _flip(rng, conversation[0], 6, 8)
    return conversation


def mutate_pdu_length(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    n = rng.randrange(len(conversation))
    length = rng.choice([0, 1, 5, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 20)])
    conversation[n] = conversation[n][:2] + struct.pack(">I", length) + conversation[n][6:]
    return conversation


def mutate_pdu_type(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    n = rng.randrange(len(conversation))
    kind = rng.choice([0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08, 0x7F, 0xFF])
    conversation[n] = bytes([kind]) + conversation[n][1:]
    return conversation


def mutate_command(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    first = _data_pdus(conversation)[0]
    conversation[first] = _flip(rng, conversation[first], 12, 6)  # after the PDV header
    return conversation


def mutate_dataset(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    pdus = _data_pdus(conversation)[1:] or _data_pdus(conversation)
    n = rng.choice(pdus)
    conversation[n] = _flip(rng, conversation[n], 12, 16)
    return conversation


def mutate_pdv_header(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    """The presentation context id, the PDV length or the message control header."""
    conversation = _pick(rng, b)
    n = rng.choice(_data_pdus(conversation))
    pdu = bytearray(conversation[n])
    where = rng.choice([6, 7, 8, 9, 10, 11])  # PDV item length (4), context id, control header
    pdu[where] = rng.randrange(256)
    conversation[n] = bytes(pdu)
    return conversation


def mismatched_syntax(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    """Negotiate one transfer syntax, send a data set encoded in another."""
    first, second = rng.sample(sorted(b), 2)
    data = [pdu for pdu in b[second] if pdu[0] == 0x04]
    return [b[first][0], *data, b[first][-1]]


def cut_short(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    stream = b"".join(_pick(rng, b))
    return [stream[: rng.randrange(1, len(stream))]]


def duplicated_and_reordered(rng: random.Random, b: dict[str, Conversation]) -> Conversation:
    conversation = _pick(rng, b)
    middle = conversation[1:-1]
    rng.shuffle(middle)
    extra = [rng.choice(middle)] if middle else []
    return [conversation[0], *middle, *extra, conversation[-1]]


MUTATORS = [
    Mutator("association request bytes", mutate_association_request),
    Mutator("PDU length", mutate_pdu_length),
    Mutator("PDU type", mutate_pdu_type),
    Mutator("command set bytes", mutate_command),
    Mutator("data set bytes", mutate_dataset),
    Mutator("PDV header", mutate_pdv_header),
    Mutator("transfer syntax mismatch", mismatched_syntax),
    Mutator("cut short", cut_short),
    Mutator("PDUs reordered and repeated", duplicated_and_reordered),
]


@dataclass
class Outcome:
    cases: int = 0
    closed: int = 0
    hangs: list[int] = field(default_factory=list)
    deaths: list[int] = field(default_factory=list)
    by_mutator: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def send_case(port: int, conversation: Conversation, timeout: float, quiet: float = 0.5) -> bool:
    """Send, give the gateway ``quiet`` seconds to answer and close (a whole conversation ends
    with a release), then half-close and wait for it to close its side. True if it closed
    within ``timeout``: a gateway still waiting after the sender has gone is a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            for pdu in conversation:
                connection.sendall(pdu)
        except OSError:
            return True  # the gateway closed while we were still sending: an answer too
        if _closed_within(connection, quiet):
            return True
        try:
            connection.shutdown(socket.SHUT_WR)
        except OSError:
            return True
        return _closed_within(connection, timeout)


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        connection.settimeout(left)
        try:
            if not connection.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def alive(port: int, within: float = 10.0) -> bool:
    """A C-ECHO succeeds within ``within`` seconds (retried: associations closing after a
    burst of broken ones may still hold every slot for a moment)."""
    deadline = time.monotonic() + within
    while True:
        if echo(port, timeout=min(10.0, within)):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def echo(port: int, timeout: float = 10.0) -> bool:
    ae = AE(ae_title="FUZZCHECK")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="EYESCREEN")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


def baselines(port: int, work: Path) -> dict[str, Conversation]:
    """Real conversations, one per transfer syntax the gateway accepts."""
    from dicom_gateway.photos import photo_to_dataset
    from tests.synthetic_photos import generated_fundus_photos

    photo = generated_fundus_photos(1)[0]
    path = work / "baseline.dcm"
    photo_to_dataset(photo, patient_id="FUZZ").save_as(path, enforce_file_format=True)
    found = {}
    for syntax in SYNTAXES:
        try:
            found[syntax] = record_conversation(port, path, syntax)
        except RuntimeError:
            continue  # a syntax the gateway does not accept: nothing to mutate
    return found


def fuzz(
    port: int,
    cases: int,
    seed: int,
    timeout: float = 10.0,
    save: Path | None = None,
    echo_every: int = 10,
) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        known = baselines(port, Path(work))
    rng = random.Random(seed)
    outcome = Outcome()
    for case in range(cases):
        mutator = rng.choice(MUTATORS)
        conversation = mutator.apply(rng, known)
        outcome.cases += 1
        outcome.by_mutator[mutator.name] = outcome.by_mutator.get(mutator.name, 0) + 1
        if send_case(port, conversation, timeout):
            outcome.closed += 1
        else:
            outcome.hangs.append(case)
            _keep(save, f"hang-{seed}-{case}", conversation)
        if ((case + 1) % echo_every == 0 or case == cases - 1) and not alive(port, timeout):
            outcome.deaths.append(case)
            _keep(save, f"echo-{seed}-{case}", conversation)
            if not alive(port, 30):  # not just slow: stop, the gateway is gone
                break
    outcome.seconds = round(time.monotonic() - started, 1)
    return outcome


def _keep(save: Path | None, name: str, conversation: Conversation) -> None:
    if save is None:
        return
    save.mkdir(parents=True, exist_ok=True)
    (save / f"{name}.pdus").write_bytes(b"".join(conversation))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    outcome = fuzz(args.port, args.cases, args.seed, args.timeout, args.save)
    print(
        f"{outcome.cases} cases in {outcome.seconds} s: {outcome.closed} answered or closed, "
        f"{len(outcome.hangs)} hangs, {len(outcome.deaths)} failed liveness checks"
    )
    for name, count in sorted(outcome.by_mutator.items()):
        print(f"  {name}: {count}")
    if outcome.hangs or outcome.deaths:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
