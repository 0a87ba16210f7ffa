"""DICOM Structured Report of a screening case: Comprehensive 3D SR, TID 1500 root (IHE AIR).

Per image (laterality as finding site, the image as source): one measurement group per taxonomy
level holding, per class, the coded finding with presence, its probability and the threshold
used, and a summary group with top-3, referral and image quality. An arbitration decision adds
a panel group; such a report is verified, with the deciding person as observer. Taxonomy codes
use the private scheme ``99EYESCR``, declared in the Coding Scheme Identification Sequence.
highdicom builds and validates the content tree; the findings' items, most of the tree and the
same from report to report, are kept encoded (``reports.sr_items``); ``reports.sr_document``
assembles the document around the tree (cheaper than highdicom's document constructor).
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from reports import sr_items
from reports.sr_document import assemble
from services.reporting.content import CaseReport, EncodedReport, EncodeReport, ImageResult, Verdict
from services.screening.decision import Finding
from services.screening.quality import Quality

SCHEME = "99EYESCR"
SCHEME_NAME = "Eye screening taxonomy"
UNITS = ("1", "UCUM", "no units")
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("2667000", "SCT", "Absent")
YES = CodedConcept("373066001", "SCT", "Yes")
NO = CodedConcept("373067005", "SCT", "No")
LATERALITY = {
    "R": CodedConcept("24028007", "SCT", "Right"),
    "L": CodedConcept("7771000", "SCT", "Left"),
    "B": CodedConcept("51440002", "SCT", "Right and left"),
}
SITE = {
    "fundus": CodedConcept("5665001", "SCT", "Retinal structure"),
    "anterior": CodedConcept("28726007", "SCT", "Corneal structure"),
}
EYE_WORDS = {"R": "Right eye", "L": "Left eye", "B": "Both eyes", "": "Eye"}


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning[:64])


PROCEDURE = {
    "fundus": private("SCREEN-FUNDUS", "Fundus photograph screening"),
    "anterior": private("SCREEN-ANTERIOR", "Anterior segment photograph screening"),
}
REFERRAL = private("REFERRAL", "Referral to ophthalmologist recommended")
QUALITY = private("QUALITY", "Image quality")
# One defined code per verdict (at most 16 characters, DICOM SH), never derived from the text.
QUALITY_CODES = {
    Quality.GRADABLE: private("GRADABLE", "Gradable"),
    Quality.EMPTY: private("UNGRAD-EMPTY", "Ungradable: no image content"),
    Quality.DARK: private("UNGRAD-DARK", "Ungradable: too dark"),
    Quality.OVEREXPOSED: private("UNGRAD-OVEREXP", "Ungradable: overexposed"),
    Quality.BLURRED: private("UNGRAD-BLURRED", "Ungradable: blurred"),
    Quality.NOT_FUNDUS: private("UNGRAD-NOTFUNDUS", "Ungradable: not a fundus photograph"),
    Quality.NO_TRAINED_MODEL: private("UNGRAD-NOMODEL", "Ungradable: no trained model for it"),
    Quality.UNFAMILIAR: private(
        "UNGRAD-UNFAMIL", "Not assessable by this model: unlike its training photographs"
    ),
}
NOT_ASSESSED = private("NOT-ASSESSED", "Not assessed by this model")
TOP = [private(f"TOP{i}", f"Diagnosis ranked {i}") for i in (1, 2, 3)]


def _shape(image: ImageResult, what: str, source: Dataset) -> sr_items.GroupShape:
    """What a group of this image says besides its findings (see ``sr_items.GroupShape``)."""
    laterality = LATERALITY.get(image.laterality)
    return sr_items.GroupShape(
        label=f"{EYE_WORDS.get(image.laterality, 'Eye')} {what}"[:64],
        algorithm=(
            image.algorithm_name,
            image.algorithm_version[:64],
            (
                f"weights-sha256={image.weights_sha256[:40]}",
                f"thresholds={image.threshold_set}"[:64],
                f"probability-scale={image.probability_scale}",
            ),
        ),
        site=sr_items.concept(SITE[image.route]),
        laterality=sr_items.concept(laterality) if laterality else None,
        source_class_uid=str(source.SOPClassUID),
    )


def _group(image: ImageResult, what: str, source: Dataset, findings: bytes) -> bytes:
    """A measurement group (TID 1501) of one image: tracking identifier and UID, algorithm,
    finding site, the findings' items, the source image."""
    shape = _shape(image, what, source)
    return sr_items.group(shape, generate_uid(), str(source.SOPInstanceUID), findings)


def _level_group(
    level: int, findings: Sequence[Finding], image: ImageResult, source: Dataset
) -> bytes:
    """Per assessed finding its probability and threshold, then every finding's presence."""
    scale = "Calibrated probability" if image.probability_scale == "calibrated" else "Probability"
    measurements = [
        sr_items.measurement(
            (f"{f.code}.{suffix}", SCHEME, f"{label} {f.name}"[:64]), round(value, 6), UNITS
        )
        for f in findings
        if f.threshold is not None  # not assessed: no probability to read, no decision
        for suffix, label, value in (
            ("P", f"{scale} of", f.probability),
            ("T", "Decision threshold for", f.threshold),
        )
    ]
    evaluations = [
        sr_items.evaluation((f.code, SCHEME, f.name[:64]), sr_items.concept(_presence(f)))
        for f in findings
    ]
    return _group(image, f"level {level} findings", source, b"".join(measurements + evaluations))


def _presence(finding: Finding) -> CodedConcept:
    if finding.positive is None:
        return NOT_ASSESSED
    return PRESENT if finding.positive else ABSENT


def _summary_group(image: ImageResult, source: Dataset) -> bytes:
    """Referral, image quality and the top three diagnoses of one image."""
    names = {f.code: f.name for f in image.findings}
    quality = QUALITY_CODES[Quality(image.quality)]
    answers = [(REFERRAL, YES if image.referral else NO), (QUALITY, quality)] + [
        (TOP[i], private(code, names[code])) for i, code in enumerate(image.top3[:3])
    ]
    evaluations = b"".join(
        sr_items.evaluation(sr_items.concept(name), sr_items.concept(value))
        for name, value in answers
    )
    return _group(image, "screening summary", source, evaluations)


def _verdict_group(verdict: Verdict) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [hd.sr.QualitativeEvaluation(REFERRAL, YES if verdict.referral else NO)] + [
        hd.sr.QualitativeEvaluation(
            private(code, verdict.names.get(code, code)), PRESENT if present else ABSENT
        )
        for code, present in sorted(verdict.findings.items())
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier="Arbitration panel decision"
        ),
        qualitative_evaluations=evaluations,
    )


def _placeholder_group() -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """highdicom's report wants a group to build; the encoded groups replace it."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="placeholder")
    )


def _device_observer(device_uid: str, model_name: str) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name="eyescreen",
            manufacturer_name="eyescreen",
            model_name=model_name[:64],
        ),
    )


def _person_observer(verdict: Verdict) -> hd.sr.ObserverContext:
    return hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
            name=verdict.person_name,
            login_name=verdict.login[:64],
            organization_name=verdict.organization[:64],
        ),
    )


def build_sr(content: CaseReport, device_uid: str, series_uid: str | None = None) -> Dataset:
    """The SR document of a case; the sources are the received images (pixels not needed)."""
    sources = [read_source(image.source) for image in content.images]
    groups: list[bytes] = []
    for image, source in zip(content.images, sources, strict=True):
        for level in sorted({f.level for f in image.findings}):
            findings = [f for f in image.findings if f.level == level]
            groups.append(_level_group(level, findings, image, source))
        groups.append(_summary_group(image, source))
    verdict = content.verdict
    panel = _verdict_group(verdict) if verdict is not None else None
    if panel is not None:
        groups.append(sr_items.item(panel[0]))
    context = hd.sr.ObservationContext(
        observer_person_context=_person_observer(verdict) if verdict else None,
        observer_device_context=_device_observer(device_uid, content.images[0].algorithm_name),
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=PROCEDURE[content.images[0].route],
        imaging_measurements=[panel or _placeholder_group()],
    )
    imaging_measurements = report[0].ContentSequence[-1]  # the container of the groups
    imaging_measurements[sr_items.CONTENT_SEQUENCE] = sr_items.raw_sequence(b"".join(groups))
    previous = [read_source(content.predecessor_sr)] if content.predecessor_sr else []
    sr = assemble(
        report[0],
        sources,
        sop_instance_uid=generate_uid(),
        series_instance_uid=series_uid or generate_uid(),
        series_number=900,
        series_description="AI screening result" + (" (verified)" if verdict else ""),
        manufacturer="eyescreen",
        verifying_observers=verdict.verifying_observers if verdict else (),
        predecessors=previous,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "eyescreen"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def encode(ds: Dataset) -> bytes:
    """Any data set as a DICOM file (VRs corrected by pydicom where ambiguous)."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_source(encoded: bytes) -> Dataset:
    return dcmread(BytesIO(encoded), stop_before_pixels=True)


def make_encoder(device_uid: str) -> EncodeReport:
    """The ``EncodeReport`` the report service is given: case content -> SR bytes."""

    def encode_report(content: CaseReport) -> EncodedReport:
        sr = build_sr(content, device_uid)
        # An SR has no ambiguous VRs: spare pydicom its walk of the whole tree per item.
        sr_items.mark_written_as_is(sr)
        return EncodedReport(str(sr.SOPInstanceUID), encode(sr))

    return encode_report
