"""The Storage SCP: application entity, TLS, presentation contexts, handlers bound to services."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from dicom_gateway.conformance import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES, VERIFICATION_SOP_CLASS
from dicom_gateway.guard import InspectorPool
from dicom_gateway.handlers import StoreContext, handle_echo, handle_requested, handle_store
from dicom_gateway.inspection import Limits
from dicom_gateway.tls import server_context
from services.group_commit import GroupCommit
from services.ingest import IngestService
from services.routing import Router
from services.settings import Settings

log = logging.getLogger(__name__)


def build_scp_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.maximum_pdu_size = 1 << 20  # fewer, larger PDUs: less per-fragment overhead
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    ae.acse_timeout = 30
    syntaxes = list(TRANSFER_SYNTAXES)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, syntaxes)
    ae.add_supported_context(VERIFICATION_SOP_CLASS, syntaxes[:2])
    return ae


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other gateway processes may also listen on
    (SO_REUSEPORT): the kernel hands each new association to one of them."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


@dataclass
class RunningGateway:
    server: ThreadedAssociationServer
    inspectors: InspectorPool
    writer: GroupCommit

    def shutdown(self) -> None:
        self.server.shutdown()
        self.writer.close()
        self.inspectors.close()


def start_gateway(
    settings: Settings,
    ingest: IngestService,
    dispatch: Callable[[Iterable[int]], object],
    router: Router,
) -> RunningGateway:
    """Start serving in background threads; the caller shuts the returned gateway down."""
    limits = Limits(settings.max_sequence_depth, settings.max_decoded_mb << 20)
    inspectors = InspectorPool(
        limits,
        workers=settings.decode_workers,
        timeout_s=settings.decode_timeout_s,
        memory_mb=settings.max_decoded_mb * 2 + 512,
    )
    writer = GroupCommit(ingest, settings.ingest_max_group)
    context = StoreContext(
        accept=writer.accept,
        dispatch=dispatch,
        router=router,
        inspect=inspectors.inspect,
        max_dataset_bytes=settings.max_dataset_mb << 20,
        urgent_sources=frozenset(settings.urgent_sources),
    )
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_requested, [settings.dicom_sources]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
    ]
    if not settings.dicom_sources:
        log.warning(
            "no DICOM sources configured: accepting any calling AE and routing by attributes "
            "(set EYESCREEN_DICOM_SOURCES to restrict)"
        )
    tls = server_context(settings)
    ae = build_scp_ae(settings)
    server = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        evt_handlers=handlers,
        ssl_context=tls,
        server_class=SharedPortServer if settings.gateway_processes > 1 else None,
    )
    threading.Thread(
        target=make_target(server.serve_forever), name="dicom-acceptor", daemon=True
    ).start()
    log.info(
        "DICOM gateway %s listening on %s:%d%s",
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
        " (TLS)" if tls else "",
    )
    return RunningGateway(server, inspectors, writer)
