"""Inspecting received data sets in separate, limited processes.

Each inspector process has an address-space limit; a data set that takes longer than the
timeout has its process killed and replaced. A crash (a decoder segfault, the memory limit)
costs that one data set a failure status, never the gateway. Processes are started with
``spawn`` so they inherit none of the gateway's threads, sockets or database connections.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import resource
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from dicom_gateway.inspection import (
    BadPixels,
    DatasetMismatch,
    Inspected,
    Limits,
    TooDeep,
    TooLarge,
    Unreadable,
    inspect,
)
from services.kernel.errors import InstanceRejected

log = logging.getLogger(__name__)


class DecodeTimeout(InstanceRejected):
    """The data set took longer than allowed to check and decode."""


def _virtual_memory_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _serve(conn: Connection, limits: Limits, memory_bytes: int) -> None:
    """Inspector process main loop: bytes in, ("ok", Inspected) or (error kind, message) out."""
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    ceiling = _virtual_memory_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    while True:
        try:
            encoded = conn.recv_bytes()
        except (EOFError, OSError):
            return
        try:
            reply: tuple[str, object] = ("ok", inspect(encoded, limits))
        except InstanceRejected as exc:
            reply = (type(exc).__name__, str(exc))
        except MemoryError:
            reply = ("TooLarge", "decoding needs more memory than allowed")
        except BaseException as exc:  # anything else a hostile file provokes
            reply = ("Unreadable", f"unreadable data set: {type(exc).__name__}")
        del encoded
        conn.send(reply)


_ERRORS: dict[str, type[InstanceRejected]] = {
    cls.__name__: cls for cls in (Unreadable, TooDeep, BadPixels, TooLarge, DatasetMismatch)
}


class _Inspector:
    def __init__(self, limits: Limits, memory_bytes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(child, limits, memory_bytes), daemon=True, name="dicom-inspector"
        )
        self.process.start()
        child.close()

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)


class InspectorPool:
    """A fixed number of inspector processes; callers wait for a free one."""

    def __init__(
        self, limits: Limits, workers: int = 2, timeout_s: float = 30.0, memory_mb: int = 2048
    ) -> None:
        self.limits = limits
        self.timeout_s = timeout_s
        self.memory_bytes = memory_mb << 20
        self._idle: queue.Queue[_Inspector] = queue.Queue()
        for _ in range(workers):
            self._idle.put(_Inspector(limits, self.memory_bytes))

    def inspect(self, encoded: bytes) -> Inspected:
        inspector = self._idle.get()
        try:
            inspector.conn.send_bytes(encoded)
            if not inspector.conn.poll(self.timeout_s):
                log.warning("inspection took over %.0f s; inspector replaced", self.timeout_s)
                inspector = self._replace(inspector)
                raise DecodeTimeout(f"checking the image took over {self.timeout_s:.0f} s")
            kind, payload = inspector.conn.recv()
        except (EOFError, OSError, BrokenPipeError) as exc:
            log.warning("inspector process died (%s); replaced", type(exc).__name__)
            inspector = self._replace(inspector)
            raise BadPixels("the decoder died on this image (memory limit or crash)") from None
        finally:
            self._idle.put(inspector)
        if kind == "ok":
            assert isinstance(payload, Inspected)
            return payload
        raise _ERRORS.get(kind, Unreadable)(str(payload))

    def _replace(self, inspector: _Inspector) -> _Inspector:
        inspector.stop()
        return _Inspector(self.limits, self.memory_bytes)

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return
