"""Sending stored report objects to a PACS by C-STORE: the ``SendReport`` of the report service."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from io import BytesIO

from pydicom import dcmread

from dicom_gateway.scu import DeliveryFailed, send_datasets
from services.reporting import DeliveryError, SendReport
from services.settings import DicomNode


def make_sender(calling_ae: str, tls: ssl.SSLContext | None = None) -> SendReport:
    def send(objects: Sequence[bytes], destination: str) -> None:
        node = DicomNode.parse(destination)
        try:
            send_datasets([dcmread(BytesIO(data)) for data in objects], node, calling_ae, tls)
        except DeliveryFailed as exc:
            raise DeliveryError(str(exc), exc.status) from exc
        except (OSError, RuntimeError, ValueError) as exc:
            raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc

    return send
