"""The SOP classes and transfer syntaxes the gateway accepts: the source of docs/conformance.md."""

from __future__ import annotations

from pydicom import uid

STORAGE_SOP_CLASSES: dict[str, str] = {
    uid.OphthalmicPhotography8BitImageStorage: "Ophthalmic Photography 8 Bit Image Storage",
    uid.OphthalmicPhotography16BitImageStorage: "Ophthalmic Photography 16 Bit Image Storage",
    uid.VLPhotographicImageStorage: "VL Photographic Image Storage",
    uid.SecondaryCaptureImageStorage: "Secondary Capture Image Storage",
    uid.MultiFrameTrueColorSecondaryCaptureImageStorage: (
        "Multi-frame True Color Secondary Capture Image Storage"
    ),
}

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# The eye-care workflow (IHE Eye Care Workflow): the gateway is the Performed Procedure Step
# Manager of the cameras (MPPS SCP) and queries the department's worklist (MWL SCU).
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
WORKFLOW_SCP_SOP_CLASSES: dict[str, str] = {
    MPPS_SOP_CLASS: "Modality Performed Procedure Step",
}
WORKLIST_FIND_SOP_CLASS = "1.2.840.10008.5.1.4.31"
WORKFLOW_SCU_SOP_CLASSES: dict[str, str] = {
    WORKLIST_FIND_SOP_CLASS: "Modality Worklist Information Model - FIND",
}

# The IHE Eye Care Workflow actors the service plays and the transactions it takes part in
# (docs/conformance.md's table, kept true by tests/unit/test_conformance.py):
# (actor, transaction, role in it, how).
_PPSM = "Performed Procedure Step Manager"
_STORED = "EYECARE-2 Modality Images/Evidence Stored"
IHE_TRANSACTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("Acquisition Modality Importer", "EYECARE-1 Query Modality Worklist", "Initiator",
     "MWL C-FIND SCU"),
    (_PPSM, "RAD-6 Modality Procedure Step In Progress", "Responder", "MPPS N-CREATE SCP"),
    (_PPSM, "RAD-7 Modality Procedure Step Completed", "Responder", "MPPS N-SET SCP"),
    ("Image Manager/Archive", _STORED, "Responder", "Storage SCP"),
    ("Evidence Creator", _STORED, "Initiator", "SR and Encapsulated PDF Storage SCU"),
)  # fmt: skip

TRANSFER_SYNTAXES: dict[str, str] = {
    uid.ImplicitVRLittleEndian: "Implicit VR Little Endian",
    uid.ExplicitVRLittleEndian: "Explicit VR Little Endian",
    uid.DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
    uid.JPEGBaseline8Bit: "JPEG Baseline (Process 1)",
    uid.JPEGExtended12Bit: "JPEG Extended (Process 2 & 4)",
    uid.JPEGLossless: "JPEG Lossless, Non-Hierarchical (Process 14)",
    uid.JPEGLosslessSV1: "JPEG Lossless, First-Order Prediction (Process 14, SV1)",
    uid.JPEGLSLossless: "JPEG-LS Lossless",
    uid.JPEGLSNearLossless: "JPEG-LS Near-Lossless",
    uid.JPEG2000Lossless: "JPEG 2000 (Lossless Only)",
    uid.JPEG2000: "JPEG 2000",
    uid.RLELossless: "RLE Lossless",
}

# What the service sends (Storage SCU) to each configured destination: the screening results,
# and the PDF report when EYESCREEN_SEND_PDF_TO_PACS is set. The sender refuses anything else,
# so this table, docs/conformance.md and the wire cannot disagree.
SCU_SOP_CLASSES: dict[str, str] = {
    uid.Comprehensive3DSRStorage: "Comprehensive 3D SR Storage",
    uid.EncapsulatedPDFStorage: "Encapsulated PDF Storage",
}

# Storage Commitment, push model: requested (N-ACTION) from each destination that accepts the
# context, after its C-STOREs; its result (N-EVENT-REPORT) received on that association or on
# one the PACS opens to the gateway (the gateway accepts the PACS in the SCP role).
STORAGE_COMMITMENT_SOP_CLASS = "1.2.840.10008.1.20.1"
COMMITMENT_SOP_CLASSES: dict[str, str] = {
    STORAGE_COMMITMENT_SOP_CLASS: "Storage Commitment Push Model"
}

# Asking a destination whether it holds a report whose C-STORE went unanswered.
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
QUERY_SCU_SOP_CLASSES: dict[str, str] = {
    STUDY_ROOT_FIND: "Study Root Query/Retrieve Information Model - FIND"
}
