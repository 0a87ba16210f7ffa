"""Domain errors. Each edge maps them: a DIMSE status at the gateway, an HTTP status on the web."""

from __future__ import annotations


class ScreeningError(Exception):
    """Base of every error this package raises on purpose."""


class InstanceRejected(ScreeningError):
    """The received data set cannot be accepted as it is; the sender should not retry as is."""


class NoRoute(InstanceRejected):
    """No rule says whether the image is a fundus or an anterior-segment photograph."""


class InstanceConflict(InstanceRejected):
    """A SOP Instance UID already stored with different content; the new copy is quarantined."""


class OutOfResources(ScreeningError):
    """The service cannot keep the image now (disk, database); the sender should retry later."""


class StorageFull(OutOfResources):
    """Free disk space is below the configured watermark."""


class ModelNotFound(ScreeningError):
    """No usable model checkpoint for a route."""


class TaxonomyError(ScreeningError):
    """A taxonomy file is inconsistent (unknown parent, duplicate code, cycle)."""


class ManifestError(ScreeningError):
    """A training manifest row is malformed; the message names the line."""
