"""Sending stored report objects to a PACS by C-STORE: the ``SendReport`` of the report service."""

from __future__ import annotations

import ssl
from bisect import bisect_right
from collections.abc import Sequence
from io import BytesIO
from itertools import accumulate

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_gateway.conformance import SCU_SOP_CLASSES
from dicom_gateway.scu import DeliveryFailed, send_datasets
from services.kernel.settings import DicomNode
from services.reporting.service import DeliveryError, SendReport


def make_sender(calling_ae: str, tls: ssl.SSLContext | None = None) -> SendReport:
    def send(deliveries: Sequence[Sequence[bytes]], destination: str) -> None:
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
        try:
            send_datasets(flat, node, calling_ae, tls)
        except DeliveryFailed as exc:
            whole = bisect_right(ends, exc.stored)  # deliveries all of whose objects went
            raise DeliveryError(str(exc), exc.status, sent=whole) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc

    return send
