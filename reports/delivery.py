"""Sending stored report objects to a PACS by C-STORE, then asking it to commit them (the
``SendReport`` of the report service); and asking it what it holds (the ``AskPacs``)."""

from __future__ import annotations

import ssl
from bisect import bisect_right
from collections.abc import Sequence
from io import BytesIO
from itertools import accumulate

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_gateway.commitment import (
    STORAGE_COMMITMENT_SOP_CLASS,
    collect_reports,
    request_commitment,
)
from dicom_gateway.conformance import SCU_SOP_CLASSES
from dicom_gateway.find import held_instances
from dicom_gateway.scu import DeliveryFailed, associate, storage_contexts, store_each
from services.kernel.settings import DicomNode
from services.reporting.commitment import CommitmentResult
from services.reporting.sending import AskPacs, DeliveryError, SendReport, Sent


def make_sender(
    calling_ae: str, tls: ssl.SSLContext | None = None, commitment: bool = True
) -> SendReport:
    """C-STORE each delivery's objects over one association; with ``commitment``, Storage
    Commitment is proposed too and, where the PACS accepts it, requested for what it stored."""

    def send(deliveries: Sequence[Sequence[bytes]], destination: str, transaction_uid: str) -> Sent:
        node = DicomNode.parse(destination)
        groups: list[list[Dataset]] = [
            [dcmread(BytesIO(data)) for data in objects] for objects in deliveries
        ]
        flat = [ds for datasets in groups for ds in datasets]
        unlisted = {str(ds.SOPClassUID) for ds in flat} - set(SCU_SOP_CLASSES)
        if unlisted:  # the conformance statement lists what we send; nothing else goes out
            raise DeliveryError(
                f"{node}: SOP class(es) not in the conformance statement: {unlisted}"
            )
        ends = list(accumulate(len(datasets) for datasets in groups))
        contexts = storage_contexts(flat)
        if commitment:
            contexts.add((STORAGE_COMMITMENT_SOP_CLASS, None))
        results: list[CommitmentResult] = []
        stored, uid = False, None
        try:
            assoc = associate(node, calling_ae, tls, contexts, collect_reports(results))
            try:
                store_each(assoc, flat, node)
                stored = True
                uid = request_commitment(assoc, flat, transaction_uid) if commitment else None
            finally:
                assoc.release()
        except DeliveryFailed as exc:
            whole = bisect_right(ends, exc.stored)  # deliveries all of whose objects went
            raise DeliveryError(str(exc), exc.status, sent=whole, unknown=exc.unknown) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            if not stored:
                raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc
            # every C-STORE was answered; the commitment request or the release failed
        return Sent(uid, tuple(results))

    return send


def make_asker(calling_ae: str, tls: ssl.SSLContext | None = None) -> AskPacs:
    def ask(uids: Sequence[str], destination: str) -> set[str] | None:
        node = DicomNode.parse(destination)
        try:
            return held_instances(uids, node, calling_ae, tls)
        except DeliveryFailed as exc:
            raise DeliveryError(str(exc), exc.status) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc

    return ask
