"""Asking a PACS whether it holds given objects: C-FIND, Study Root, IMAGE level, by SOP
Instance UID. Used before re-sending a report whose C-STORE went unanswered."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from pydicom.dataset import Dataset

from dicom_gateway.conformance import STUDY_ROOT_FIND
from dicom_gateway.scu import AssociationRejected, DeliveryFailed, associate
from services.kernel.settings import DicomNode

PENDING = (0xFF00, 0xFF01)


def held_instances(
    uids: Sequence[str], node: DicomNode, calling_ae: str, tls: ssl.SSLContext | None = None
) -> set[str] | None:
    """Those of ``uids`` the PACS holds; None when it does not offer C-FIND, or rejects the
    query association (it cannot tell).
    ``DeliveryFailed`` when it cannot be reached or the query fails."""
    model = STUDY_ROOT_FIND
    try:
        assoc = associate(node, calling_ae, tls, [(model, None)])
    except AssociationRejected:  # a storage-only PACS refuses a query association
        return None
    try:
        if not any(str(c.abstract_syntax) == model for c in assoc.accepted_contexts):
            return None
        held = set()
        for uid in uids:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = query.SeriesInstanceUID = ""
            query.SOPInstanceUID = uid
            for status, identifier in assoc.send_c_find(query, model):
                code = int(status.Status) if status is not None and "Status" in status else None
                if code is None or (code not in PENDING and code != 0x0000):
                    raise DeliveryFailed(f"{node}: C-FIND answered {code}", code)
                found = identifier is not None and identifier.get("SOPInstanceUID") == uid
                if code in PENDING and found:
                    held.add(uid)
        return held
    finally:
        assoc.release()
