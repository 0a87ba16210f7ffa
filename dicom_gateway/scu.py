"""Storage SCU: sends a data set to a remote AE and reports the status it answered."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association

from services.kernel.settings import DicomNode

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """The peer refused the association, was unreachable, or answered a non-success status.

    ``unknown``: a C-STORE went out and no answer came back (timeout, abort, connection cut):
    the peer may have kept the data set."""

    def __init__(
        self, message: str, status: int | None = None, stored: int = 0, unknown: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.stored = stored  # data sets the peer had answered success for before this
        self.unknown = unknown


class AssociationRejected(DeliveryFailed):
    """The peer answered and would not take what was proposed (A-ASSOCIATE-RJ, or none of the
    presentation contexts accepted): reachable, e.g. a storage-only PACS asked for C-FIND."""


def associate(
    node: DicomNode,
    calling_ae: str,
    tls: ssl.SSLContext | None,
    contexts: Iterable[tuple[str, str | None]],
    handlers: Sequence[Any] = (),
) -> Association:
    """An established association proposing ``contexts`` (SOP class, transfer syntax or None
    for the defaults); ``DeliveryFailed`` if refused or unreachable."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop_class, syntax in contexts:
        if syntax is None:
            ae.add_requested_context(sop_class)
        else:
            ae.add_requested_context(sop_class, syntax)
    if node.tls and tls is None:
        raise DeliveryFailed(f"{node} needs TLS but no TLS context was given")
    tls_args = (tls, node.host) if node.tls and tls is not None else None
    assoc = ae.associate(
        node.host, node.port, ae_title=node.ae_title, tls_args=tls_args, evt_handlers=list(handlers)
    )
    if assoc.is_rejected or (not assoc.is_established and assoc.rejected_contexts):
        # rejected outright, or accepted with none of the contexts (pynetdicom then aborts)
        raise AssociationRejected(f"association with {node} rejected by the peer")
    if not assoc.is_established:
        raise DeliveryFailed(f"association with {node} refused or unreachable")
    return assoc


def storage_contexts(datasets: Iterable[Dataset]) -> set[tuple[str, str | None]]:
    return {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}


def store_each(assoc: Association, datasets: Sequence[Dataset], node: DicomNode) -> list[int]:
    """C-STORE each data set in order; ``DeliveryFailed`` (saying how many were stored, and
    whether the failing one's outcome is unknown) on the first failure."""
    statuses: list[int] = []
    for ds in datasets:
        try:
            reply = assoc.send_c_store(ds)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryFailed(
                f"{node}: {type(exc).__name__}: {exc}", None, len(statuses), unknown=True
            ) from exc
        code = int(reply.Status) if "Status" in reply else None
        if code is None:
            raise DeliveryFailed(
                f"{node} gave no C-STORE response (timeout or abort)",
                None,
                len(statuses),
                unknown=True,
            )
        if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success and warnings
            comment = str(reply.get("ErrorComment", ""))
            raise DeliveryFailed(
                f"{node} answered 0x{code:04X} {comment}".strip(), code, len(statuses)
            )
        statuses.append(code)
    return statuses


def send_datasets(
    datasets: list[Dataset],
    node: DicomNode,
    calling_ae: str,
    tls: ssl.SSLContext | None = None,
) -> list[int]:
    """C-STORE each data set over one association, in order; raise ``DeliveryFailed`` (saying
    how many were stored) on the first failure.
    A ``+tls`` node is reached over TLS with ``tls`` (its certificate and host name verified)."""
    assoc = associate(node, calling_ae, tls, storage_contexts(datasets))
    try:
        return store_each(assoc, datasets, node)
    finally:
        assoc.release()


def send_files(paths: list[Path], node: DicomNode, calling_ae: str) -> list[int]:
    return send_datasets([dcmread(p) for p in paths], node, calling_ae)
