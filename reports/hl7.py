"""A case's result as an HL7 v2.5 ORU^R01 for the hospital's record, built with hl7apy (its
structure validated strictly before it leaves): the ``EncodeHl7`` of the report service.

PID carries the patient as the images gave it; OBR the accession number (placer and filler
order number) and the result status: P while only the model has read the case, F once the
arbitration panel's verified decision is in. OBX 1 is the referral (HL7 table 0136 Y/N), then
one OBX per positive finding (the image's laterality as sub-id; the panel's findings when it
decided), and a last OBX names the DICOM SR the result also went to the PACS as. The message
control id is derived from the SR and the destination: a retry resends the same message.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message

from services.kernel.settings import MllpNode
from services.reporting.content import CaseReport, EncodeHl7

CODING = "99EYESCREEN"
_ESCAPES = str.maketrans({"|": " ", "^": " ", "~": " ", "\\": " ", "&": " ", "\r": " "})


def _text(value: str, limit: int = 199) -> str:
    """A value with HL7's delimiters blanked out (names and comments come from outside)."""
    return value.translate(_ESCAPES).strip()[:limit]


def _findings(content: CaseReport) -> list[tuple[str, str, str]]:
    """(sub-id, code, name) of each positive finding."""
    if content.verdict is not None:
        return [
            ("", code, content.verdict.names.get(code, code))
            for code, present in sorted(content.verdict.findings.items())
            if present
        ]
    rows: list[tuple[str, str, str]] = []
    for image in content.images:
        for finding in image.findings:
            row = (image.laterality, finding.code, finding.name)
            if finding.positive and row not in rows:
                rows.append(row)
    return rows


def encode_oru(
    content: CaseReport,
    sr_uid: str,
    destination: str,
    sending_app: str = "EYESCREEN",
    sending_facility: str = "",
    now: datetime | None = None,
) -> bytes:
    """The ORU^R01 of one report for one destination, ER7-encoded (segments end in CR)."""
    node = MllpNode.parse(destination)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    status = "F" if content.verdict is not None else "P"
    message = Message("ORU_R01", version="2.5", validation_level=VALIDATION_LEVEL.STRICT)
    msh = message.msh
    msh.msh_3 = _text(sending_app, 20)
    msh.msh_4 = _text(sending_facility, 20)
    msh.msh_5 = _text(node.application, 20)
    msh.msh_7 = stamp
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = hashlib.sha256(f"{sr_uid}|{destination}".encode()).hexdigest()[:20]
    msh.msh_11 = "P"
    msh.msh_12 = "2.5"
    result = message.add_group("ORU_R01_PATIENT_RESULT")
    pid = result.add_group("ORU_R01_PATIENT").pid
    patient = content.patient
    pid.pid_1 = "1"
    pid.pid_3 = _text(patient.patient_id, 64)
    names = [_text(part, 50) for part in patient.name.split("^")[:5]]
    pid.pid_5 = "^".join(names) if any(names) else "UNKNOWN"  # PID-5 is required
    if patient.birth_date:
        pid.pid_7 = _text(patient.birth_date, 8)
    if patient.sex in ("M", "F", "O"):
        pid.pid_8 = patient.sex
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    obr = order.obr
    obr.obr_1 = "1"
    if patient.accession_number:
        obr.obr_2 = obr.obr_3 = _text(patient.accession_number, 16)
    obr.obr_4 = f"EYESCREEN^Automated eye screening^{CODING}"
    if patient.study_date:
        obr.obr_7 = _text(patient.study_date, 8)
    obr.obr_22 = stamp
    obr.obr_25 = status
    rows: list[tuple[str, str, str, str]] = [
        (
            "CE",
            f"REFERRAL^Referral to an ophthalmologist^{CODING}",
            "",
            "Y^Yes^HL70136" if content.referral else "N^No^HL70136",
        )
    ]
    rows += [
        ("CE", f"FINDING^Finding^{CODING}", sub_id, f"{_text(code, 20)}^{_text(name)}^{CODING}")
        for sub_id, code, name in _findings(content)
    ]
    rows.append(("ST", f"SR^DICOM Structured Report SOP Instance UID^{CODING}", "", sr_uid))
    for n, (kind, identifier, sub_id, value) in enumerate(rows, 1):
        obx = order.add_group("ORU_R01_OBSERVATION").obx
        obx.obx_1 = str(n)
        obx.obx_2 = kind
        obx.obx_3 = identifier
        if sub_id:
            obx.obx_4 = sub_id
        obx.obx_5 = value
        obx.obx_11 = status
    message.validate()
    return message.to_er7().encode("utf-8")


def make_oru_encoder(sending_app: str, sending_facility: str) -> EncodeHl7:
    def encode(content: CaseReport, sr_uid: str, destination: str) -> bytes:
        return encode_oru(content, sr_uid, destination, sending_app, sending_facility)

    return encode
