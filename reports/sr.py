"""DICOM Structured Report of a screening result: Comprehensive 3D SR, TID 1500 root (IHE AIR).

One measurement group per taxonomy level holds, per class, the coded finding with presence,
its probability and the threshold used; a summary group holds top-3, referral and image
quality. Taxonomy codes use the private scheme ``99EYESCR``, declared in the Coding Scheme
Identification Sequence. highdicom validates what we build.
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

from services.reporting import EncodedReport, EncodeReport, ReportRequest
from services.screening import Finding

SCHEME = "99EYESCR"
SCHEME_NAME = "Eye screening taxonomy"
UCUM_NO_UNITS = CodedConcept("1", "UCUM", "no units")
PRESENT = CodedConcept("52101004", "SCT", "Present")
ABSENT = CodedConcept("2667000", "SCT", "Absent")
YES = CodedConcept("373066001", "SCT", "Yes")
NO = CodedConcept("373067005", "SCT", "No")


def private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning[:64])


PROCEDURE = {
    "fundus": private("SCREEN-FUNDUS", "Fundus photograph screening"),
    "anterior": private("SCREEN-ANTERIOR", "Anterior segment photograph screening"),
}
REFERRAL = private("REFERRAL", "Referral to ophthalmologist recommended")
QUALITY = private("QUALITY", "Image quality")
GRADABLE = private("GRADABLE", "Gradable")
TOP = [private(f"TOP{i}", f"Diagnosis ranked {i}") for i in (1, 2, 3)]


def _level_group(
    level: int,
    findings: Sequence[Finding],
    source: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    evaluations = [
        hd.sr.QualitativeEvaluation(private(f.code, f.name), PRESENT if f.positive else ABSENT)
        for f in findings
    ]
    measurements = []
    for f in findings:
        measurements.append(
            hd.sr.Measurement(
                name=private(f"{f.code}.P", f"Probability of {f.name}"),
                value=round(f.probability, 6),
                unit=UCUM_NO_UNITS,
            )
        )
        measurements.append(
            hd.sr.Measurement(
                name=private(f"{f.code}.T", f"Decision threshold for {f.name}"),
                value=round(f.threshold, 6),
                unit=UCUM_NO_UNITS,
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"Level {level} findings"
        ),
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        qualitative_evaluations=evaluations,
        measurements=measurements,
    )


def _summary_group(
    content: ReportRequest,
    names: dict[str, str],
    source: Dataset,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    quality = (
        GRADABLE
        if content.quality == "gradable"
        else private(content.quality.upper()[:16], content.quality)
    )
    evaluations = [
        hd.sr.QualitativeEvaluation(REFERRAL, YES if content.referral else NO),
        hd.sr.QualitativeEvaluation(QUALITY, quality),
    ] + [
        hd.sr.QualitativeEvaluation(TOP[i], private(code, names[code]))
        for i, code in enumerate(content.top3[:3])
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier="Screening summary"
        ),
        algorithm_id=algorithm,
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(source)],
        qualitative_evaluations=evaluations,
    )


def build_sr(
    source: Dataset,
    content: ReportRequest,
    device_uid: str,
    series_uid: str | None = None,
) -> Dataset:
    """An SR document about ``source`` (the received image, pixel data not needed)."""
    algorithm = hd.sr.AlgorithmIdentification(
        name=content.algorithm_name,
        version=content.algorithm_version[:64],
        parameters=[
            f"weights-sha256={content.weights_sha256[:40]}",
            f"thresholds={content.threshold_set}"[:64],
        ],
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name="eyescreen",
            manufacturer_name="eyescreen",
            model_name=content.algorithm_name[:64],
        ),
    )
    levels = sorted({f.level for f in content.findings})
    names = {f.code: f.name for f in content.findings}
    groups = [
        _level_group(lvl, [f for f in content.findings if f.level == lvl], source, algorithm)
        for lvl in levels
    ]
    groups.append(_summary_group(content, names, source, algorithm))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE[content.route],
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=series_uid or generate_uid(),
        series_number=900,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="eyescreen",
        series_description="AI screening result",
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=[read_source(content.predecessor_sr)] if content.predecessor_sr else None,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = SCHEME
    scheme.CodingSchemeName = SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "eyescreen"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def read_source(encoded: bytes) -> Dataset:
    return dcmread(BytesIO(encoded), stop_before_pixels=True)


def make_encoder(device_uid: str) -> EncodeReport:
    """The ``EncodeReport`` the report service is given: received image bytes -> SR bytes."""

    def encode_report(source: bytes, request: ReportRequest) -> EncodedReport:
        sr = build_sr(read_source(source), request, device_uid)
        return EncodedReport(str(sr.SOPInstanceUID), encode(sr))

    return encode_report
