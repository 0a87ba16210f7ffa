"""The Storage SCP: application entity, presentation contexts, handlers bound to services."""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer

from dicom_gateway.conformance import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION_SOP_CLASS
from dicom_gateway.handlers import StoreContext, handle_echo, handle_store
from services.settings import Settings

log = logging.getLogger(__name__)


def build_scp_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    syntaxes = list(TRANSFER_SYNTAXES)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(VERIFICATION_SOP_CLASS, syntaxes[:2])
    return ae


def start_scp(settings: Settings, context: StoreContext, block: bool = False) -> Any:
    """Start serving; returns the server (non-blocking) so the caller can shut it down."""
    ae = build_scp_ae(settings)
    handlers: list[Any] = [
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
    ]
    if not settings.route_by_ae:
        log.warning(
            "no DICOM sources configured: accepting any calling AE and routing by attributes "
            "(set EYESCREEN_ROUTE_BY_AE to restrict)"
        )
    log.info(
        "DICOM gateway %s listening on %s:%d",
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
    )
    server: ThreadedAssociationServer | None = ae.start_server(
        (settings.dicom_host, settings.dicom_port), block=block, evt_handlers=handlers
    )
    return server
