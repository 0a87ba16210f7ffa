"""The kept, pre-encoded SR items say exactly what highdicom builds for the same content."""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
import pytest
from highdicom.sr import CodedConcept
from pydicom.filereader import read_dataset

from reports import sr_items

GLAUCOMA = ("F.GLAU", "99EYESCR", "Glaucoma")
UNITS = ("1", "UCUM", "no units")
PRESENT = ("52101004", "SCT", "Present")
SHAPE = sr_items.GroupShape(
    label="Right eye level 1 findings",
    algorithm=("fundus", "1.3", ("weights-sha256=abc", "thresholds=cv", "probability-scale=x")),
    site=("5665001", "SCT", "Retinal structure"),
    laterality=("24028007", "SCT", "Right"),
    source_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
)


def _parse(items: bytes):  # type: ignore[no-untyped-def]
    encoded = sr_items.CONTENT_SEQUENCE_START + items + sr_items.SEQUENCE_END
    return read_dataset(BytesIO(encoded), is_implicit_VR=False, is_little_endian=True)


@pytest.mark.parametrize("value", [0.123457, 1.0, 0.0, 1e-06, 0.999999, 0.5])
def test_a_measurement_is_highdicoms(value: float) -> None:
    ours = _parse(sr_items.measurement(GLAUCOMA, value, UNITS)).ContentSequence[0]
    theirs = hd.sr.Measurement(CodedConcept(*GLAUCOMA), value, CodedConcept(*UNITS))[0]
    assert ours.to_json_dict() == theirs.to_json_dict()


def test_a_group_with_its_findings_is_highdicoms_with_another_tracking_uid_and_source() -> None:
    """The kept group is built with stand-in UIDs; the real ones, of other lengths, replace
    them without breaking the encoding."""
    tracking, source = "1.2.3.4.5", "1.2.826.0.1.3680043.8.498.1234567890123456789"
    findings = sr_items.measurement(GLAUCOMA, 0.25, UNITS) + sr_items.evaluation(GLAUCOMA, PRESENT)
    ours = _parse(sr_items.group(SHAPE, tracking, source, findings)).ContentSequence[0]
    theirs = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking, identifier=SHAPE.label),
        algorithm_id=hd.sr.AlgorithmIdentification(*SHAPE.algorithm[:2], list(SHAPE.algorithm[2])),
        finding_sites=[
            hd.sr.FindingSite(
                CodedConcept(*SHAPE.site), laterality=CodedConcept(*SHAPE.laterality or ())
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup(SHAPE.source_class_uid, source)],
        measurements=[hd.sr.Measurement(CodedConcept(*GLAUCOMA), 0.25, CodedConcept(*UNITS))],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(CodedConcept(*GLAUCOMA), CodedConcept(*PRESENT))
        ],
    )[0]
    assert ours.to_json_dict() == theirs.to_json_dict()
