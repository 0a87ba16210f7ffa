"""Sending stored report objects to a PACS by C-STORE: the ``SendReport`` of the report service."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_gateway.conformance import SCU_SOP_CLASSES
from dicom_gateway.scu import DeliveryFailed, send_datasets
from services.reporting import DeliveryError, SendReport
from services.settings import DicomNode


def make_sender(calling_ae: str, tls: ssl.SSLContext | None = None) -> SendReport:
    def send(objects: Sequence[bytes], destination: str) -> None:
        node = DicomNode.parse(destination)
        datasets: list[Dataset] = [dcmread(BytesIO(data)) for data in objects]
        unlisted = {str(ds.SOPClassUID) for ds in datasets} - set(SCU_SOP_CLASSES)
        if unlisted:  # the conformance statement lists what we send; nothing else goes out
            raise DeliveryError(
                f"{node}: SOP class(es) not in the conformance statement: {unlisted}"
            )
        try:
            send_datasets(datasets, node, calling_ae, tls)
        except DeliveryFailed as exc:
            raise DeliveryError(str(exc), exc.status) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc

    return send
