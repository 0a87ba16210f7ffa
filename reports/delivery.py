"""Sending stored SR bytes to a PACS by C-STORE: the ``SendReport`` given to the report service."""

from __future__ import annotations

from io import BytesIO

from pydicom import dcmread

from dicom_gateway.scu import DeliveryFailed, send_datasets
from services.reporting import DeliveryError, SendReport
from services.settings import DicomNode


def make_sender(calling_ae: str) -> SendReport:
    def send(data: bytes, destination: str) -> None:
        node = DicomNode.parse(destination)
        try:
            send_datasets([dcmread(BytesIO(data))], node, calling_ae)
        except DeliveryFailed as exc:
            raise DeliveryError(str(exc), exc.status) from exc
        except (OSError, RuntimeError) as exc:
            raise DeliveryError(f"{node}: {type(exc).__name__}: {exc}") from exc

    return send
