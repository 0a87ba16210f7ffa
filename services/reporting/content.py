"""What a report says, independent of how it is written: the images with their findings, the
panel's verdict, the patient, and the signatures of the writers injected from the edges (the SR
encoder, the PDF renderer, the HL7 encoder, the PDF wrapper)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from services.screening import Finding


@dataclass(frozen=True)
class ImageResult:
    """The model's reading of one image, with the image as received (for references)."""

    source: bytes
    laterality: str
    route: str
    findings: tuple[Finding, ...]
    top3: tuple[str, ...]
    referral: bool
    quality: str
    algorithm_name: str
    algorithm_version: str
    weights_sha256: str
    threshold_set: str
    heatmap_path: str | None = None
    probability_scale: str = "raw"  # "calibrated": per-class temperature scaling


@dataclass(frozen=True)
class Verdict:
    """An arbitration panel decision: reported as a verified revision, the person as observer."""

    person_name: str  # DICOM PN, Family^Given
    login: str
    organization: str
    findings: dict[str, bool]
    names: dict[str, str]  # code -> name, for the codes in findings
    referral: bool
    comment: str
    decided_at: datetime
    # Everyone who signed the decision (DICOM PN names), in signing order: the SR's
    # Verifying Observers. Empty for decisions from before signers were kept: the decider.
    signers: tuple[str, ...] = ()

    @property
    def verifying_observers(self) -> tuple[tuple[str, str], ...]:
        """(name, organization) of each Verifying Observer."""
        return tuple((name, self.organization) for name in self.signers or (self.person_name,))


@dataclass(frozen=True)
class Patient:
    """The patient and study attributes a report shows (PHI: never logged)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    accession_number: str


@dataclass(frozen=True)
class CaseReport:
    """Everything a report of one case says."""

    case_id: int
    patient: Patient
    images: tuple[ImageResult, ...]
    verdict: Verdict | None = None
    predecessor_sr: bytes | None = None

    @property
    def referral(self) -> bool:
        """The case is referred when any of its images is (or the panel says so)."""
        if self.verdict is not None:
            return self.verdict.referral
        return any(image.referral for image in self.images)


@dataclass(frozen=True)
class EncodedReport:
    """A built SR: its bytes and UIDs."""

    sop_instance_uid: str
    data: bytes


EncodeReport = Callable[[CaseReport], EncodedReport]
RenderDocument = Callable[[CaseReport], bytes]  # a PDF
# (content, the SR's SOP Instance UID, an HL7 destination) -> the ORU^R01 for that destination
EncodeHl7 = Callable[[CaseReport, str, str], bytes]
WrapDocument = Callable[[bytes, bytes], bytes]  # (PDF, an image of the case) -> Encapsulated PDF
