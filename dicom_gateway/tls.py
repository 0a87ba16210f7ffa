"""DICOM TLS contexts (TLS 1.2 or later, in the spirit of BCP 195): the gateway's server side,
and the client side for sending reports to a PACS that asks for TLS."""

from __future__ import annotations

import ssl

from services.kernel.settings import Settings


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """With a CA configured, callers must present a certificate it signed."""
    if settings.tls_certificate is None or settings.tls_private_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_certificate, settings.tls_private_key)
    if settings.tls_client_ca is not None:
        context.load_verify_locations(settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the PACS certificate (against ``sr_tls_ca``, else the system's CAs) and its
    host name; presents our certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.sr_tls_ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.sr_tls_certificate is not None and settings.sr_tls_private_key is not None:
        context.load_cert_chain(settings.sr_tls_certificate, settings.sr_tls_private_key)
    return context
