"""The Storage SCP: application entity, TLS, presentation contexts, handlers bound to services."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from dicom_gateway.commitment import (
    add_report_context,
    commitment_peers,
    handle_commitment_report,
    settle_commitment,
)
from dicom_gateway.conformance import (
    MPPS_SOP_CLASS,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
)
from dicom_gateway.guard import InspectorPool
from dicom_gateway.handlers import StoreContext, handle_echo, handle_requested, handle_store
from dicom_gateway.inspection import Limits
from dicom_gateway.mpps import StepContext, mpps_handlers
from dicom_gateway.tls import server_context
from services.intake.group_commit import GroupCommit
from services.intake.ingest import IngestService
from services.intake.routing import Router
from services.intake.sites import SourceSites
from services.kernel.settings import Settings
from services.workflow import PerformedSteps

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
    ae.add_supported_context(MPPS_SOP_CLASS, syntaxes[:2])
    add_report_context(ae)  # Storage Commitment results from the PACS (N-EVENT-REPORT)
    return ae


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other gateway processes may also listen on
    (SO_REUSEPORT): the kernel hands each new association to one of them."""

    def server_bind(self) -> None:
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def reap_dead_negotiations(server: ThreadedAssociationServer, stop: threading.Event) -> None:
    """End associations whose connection handler died before the association was negotiated.

    pynetdicom's connection thread dies on some malformed association requests (an exception
    in its state machine) without telling the association thread, which then waits the whole
    ACSE timeout for a request that never comes, holding one of the ``max_associations``
    slots: a sender of broken requests could keep every camera out (found by fuzz/network.py).
    Handing the waiting thread an empty answer makes it close at once, as on a timeout."""
    while not stop.wait(0.5):
        for assoc in server.active_associations:
            dul = assoc.dul  # started (it has an ident) and ended: not one still starting
            ended = dul.ident is not None and not dul.is_alive()
            if ended and not assoc.is_established and assoc.is_acceptor:
                assoc.dul.to_user_queue.put(None)  # type: ignore[arg-type]


def log_thread_errors(args: threading.ExceptHookArgs) -> None:
    """One log line for an exception that ends a thread (pynetdicom's, on malformed input),
    instead of a traceback on stderr; the association it served is closed by the reaper."""
    name = args.thread.name if args.thread else "?"
    log.warning("thread %s ended: %s: %s", name, args.exc_type.__name__, str(args.exc_value)[:200])


@dataclass
class RunningGateway:
    server: ThreadedAssociationServer
    inspectors: InspectorPool
    writer: GroupCommit
    stop_reaper: threading.Event

    def shutdown(self) -> None:
        self.stop_reaper.set()
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
        sites=SourceSites(settings.site, settings.source_sites),
    )
    steps = PerformedSteps(ingest.sessions, settings.pdf_reports)
    callers = [*settings.dicom_sources, *commitment_peers(settings.sr_destinations)]
    settle_report = partial(settle_commitment, ingest.sessions, dispatch)
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, handle_requested, [callers if settings.dicom_sources else []]),
        (evt.EVT_C_ECHO, handle_echo),
        (evt.EVT_C_STORE, handle_store, [context]),
        *mpps_handlers(StepContext(steps, dispatch)),
        (evt.EVT_N_EVENT_REPORT, handle_commitment_report, [settle_report]),
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
        server_class=SharedPortServer
        if settings.gateway_processes > 1
        else ThreadedAssociationServer,
    )
    ae._servers.append(server)  # as ae.start_server does: the server's shutdown expects it
    threading.Thread(
        target=make_target(server.serve_forever), name="dicom-acceptor", daemon=True
    ).start()
    stop_reaper = threading.Event()
    threading.Thread(
        target=reap_dead_negotiations, args=(server, stop_reaper), name="reaper", daemon=True
    ).start()
    threading.excepthook = log_thread_errors
    log.info(
        "DICOM gateway %s listening on %s:%d%s",
        settings.ae_title,
        settings.dicom_host,
        settings.dicom_port,
        " (TLS)" if tls else "",
    )
    return RunningGateway(server, inspectors, writer, stop_reaper)
