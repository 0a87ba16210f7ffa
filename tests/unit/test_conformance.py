"""docs/conformance.md must say what the gateway is configured to do."""

from __future__ import annotations

import re
from pathlib import Path

from dicom_gateway import mpps, statuses
from dicom_gateway.conformance import (
    COMMITMENT_SOP_CLASSES,
    IHE_TRANSACTIONS,
    QUERY_SCU_SOP_CLASSES,
    SCU_SOP_CLASSES,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    WORKFLOW_SCP_SOP_CLASSES,
    WORKFLOW_SCU_SOP_CLASSES,
)
from dicom_gateway.server import build_scp_ae
from services.kernel.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance.md"


def _table(marker: str) -> list[list[str]]:
    text = DOC.read_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].strip().split("\n\n", 1)[0]
    rows = [line.strip("|").split("|") for line in block.splitlines()[2:]]
    return [[cell.strip().strip("`") for cell in row] for row in rows]


def test_storage_classes_match_the_scp() -> None:
    documented = {uid: name for name, uid, role in _table("scp-sop-classes") if role == "SCP"}
    expected = dict(STORAGE_SOP_CLASSES) | {VERIFICATION_SOP_CLASS: "Verification"}
    assert documented == expected
    contexts = {str(c.abstract_syntax) for c in build_scp_ae(Settings()).supported_contexts}
    assert contexts == set(expected) | set(WORKFLOW_SCP_SOP_CLASSES) | set(COMMITMENT_SOP_CLASSES)


def test_workflow_classes_and_roles_match_the_gateway() -> None:
    """MPPS is negotiated by the SCP; the worklist SCU asks for exactly what is listed."""
    from dicom_gateway.worklist import WORKLIST_FIND_SOP_CLASS

    rows = _table("workflow-sop-classes")
    assert {uid: name for name, uid, role in rows if role == "SCP"} == WORKFLOW_SCP_SOP_CLASSES
    assert {uid: name for name, uid, role in rows if role == "SCU"} == WORKFLOW_SCU_SOP_CLASSES
    assert set(WORKFLOW_SCU_SOP_CLASSES) == {WORKLIST_FIND_SOP_CLASS}


def test_mpps_statuses_match_the_handlers() -> None:
    documented = {int(code, 16): meaning for code, meaning in _table("mpps-statuses")}
    assert documented == mpps.MEANINGS


def test_ihe_actors_and_transactions_match_the_table() -> None:
    assert [tuple(row) for row in _table("ihe-eyecare")] == list(IHE_TRANSACTIONS)


def test_commitment_and_query_classes_match_the_gateway_and_the_sender() -> None:
    """Storage Commitment: the gateway accepts the PACS's association in the SCP role (to
    receive N-EVENT-REPORT); the sender proposes it and C-FIND (``reports/delivery.py``)."""
    documented = {uid: (name, role) for name, uid, role, _ in _table("commitment-sop-classes")}
    assert documented == {
        uid: (name, "SCU") for uid, name in (COMMITMENT_SOP_CLASSES | QUERY_SCU_SOP_CLASSES).items()
    }
    [context] = [
        c
        for c in build_scp_ae(Settings()).supported_contexts
        if str(c.abstract_syntax) in COMMITMENT_SOP_CLASSES
    ]
    assert context.scp_role and context.scu_role  # role selection proposed by the PACS accepted


def test_transfer_syntaxes_match_the_scp() -> None:
    documented = {uid: name for name, uid in _table("transfer-syntaxes")}
    assert documented == TRANSFER_SYNTAXES
    for context in build_scp_ae(Settings()).supported_contexts:
        if str(context.abstract_syntax) in STORAGE_SOP_CLASSES:
            assert set(context.transfer_syntax) == set(TRANSFER_SYNTAXES)


def test_scu_classes_match_what_the_service_sends() -> None:
    """The documented SCU classes are the sender's allow-list (``reports/delivery.py``); the
    objects the report service builds are checked against it in tests/integration/test_reports.
    """
    from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage

    assert {uid: name for name, uid, _ in _table("scu-sop-classes")} == SCU_SOP_CLASSES
    assert {Comprehensive3DSRStorage, EncapsulatedPDFStorage} <= set(SCU_SOP_CLASSES)


def test_statuses_match_the_handlers() -> None:
    documented = {int(code, 16): meaning for code, meaning in _table("statuses")}
    assert documented == statuses.MEANINGS
    codes = {
        value
        for name, value in vars(statuses).items()
        if re.fullmatch(r"[A-Z_]+", name) and isinstance(value, int)
    }
    assert codes == set(statuses.MEANINGS)


def test_the_sender_refuses_what_the_statement_does_not_list() -> None:
    """An image (OP) handed to the report sender is refused before any association."""
    import pytest

    from dicom_gateway.photos import photo_to_dataset
    from reports.delivery import make_sender
    from reports.sr import encode
    from services.reporting.sending import DeliveryError
    from tests.synthetic_photos import generated_fundus_photos

    photo = encode(photo_to_dataset(generated_fundus_photos(1)[0], patient_id="C1"))
    with pytest.raises(DeliveryError, match="not in the conformance statement"):
        make_sender("EYESCREEN")([[photo]], "PACS@127.0.0.1:9", "2.25.1")
