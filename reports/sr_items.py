"""The repeated content items of a screening SR, encoded once and reused as bytes.

A level group of a fundus report holds two numeric and one coded item per finding, and a case
has several such groups: tens of thousands of data elements, most of them the same from one
report to the next (a finding's coded name, its presence, the units). Building each through
highdicom and encoding it through pydicom cost most of a report's time. Here an item that
cannot differ (a finding's presence) is encoded once per value and kept; a measurement is its
kept head plus the two value elements written directly. The items are written with undefined
lengths, so the kept bytes fit anywhere without lengths to recompute; highdicom still builds
what each kept item is made from, and the tests compare the result with highdicom's own.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag
from pydicom.valuerep import DS

ITEM = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"  # item of undefined length
ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
CONTENT_SEQUENCE = Tag(0x0040, 0xA730)
MEASURED_VALUE_SEQUENCE = struct.pack("<HH", 0x0040, 0xA300) + b"SQ\x00\x00\xff\xff\xff\xff"
FLOATING_POINT_VALUE = struct.pack("<HH", 0x0040, 0xA161) + b"FD" + struct.pack("<H", 8)
NUMERIC_VALUE = struct.pack("<HH", 0x0040, 0xA30A) + b"DS"

CONTENT_SEQUENCE_START = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00\xff\xff\xff\xff"
# Stand-ins for the two values of a measurement group that change from report to report; they
# are written into the kept group and replaced by the real UIDs (same element, new length).
TRACKING_UID_MARK = "2.25.1000000000000000000000000000000000001"
SOURCE_UID_MARK = "2.25.1000000000000000000000000000000000002"

Concept = tuple[str, str, str]  # (code value, coding scheme designator, code meaning)


@dataclass(frozen=True)
class GroupShape:
    """What a measurement group (TID 1501) of an image holds besides its findings: all of it
    the same for every image of that eye read by that model."""

    label: str  # the tracking identifier, e.g. "Right eye level 2 findings"
    algorithm: tuple[str, str, tuple[str, ...]]  # name, version, parameters
    site: Concept
    laterality: Concept | None
    source_class_uid: str


def concept(coded: CodedConcept) -> Concept:
    return (coded.value, coded.scheme_designator, coded.meaning)


def body(dataset: Dataset) -> bytes:
    """A data set's elements in Explicit VR Little Endian, as pydicom writes them."""
    mark_written_as_is(dataset)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, dataset)
    return buffer.getvalue()


def mark_written_as_is(dataset: Dataset) -> None:
    """Tell pydicom that the data set and its items are already in the encoding they will be
    written in. Otherwise it walks the whole tree again for every item it writes, looking for
    ambiguous VRs (an SR has none) and decoding kept raw items to do so: most of the writing
    time of a report. An element whose VR is still ambiguous makes the writer raise."""
    dataset.set_original_encoding(False, True, dataset._character_set)
    for element in dataset.elements():
        if element.VR == "SQ" and not isinstance(element, RawDataElement):
            for child in element.value:
                mark_written_as_is(child)


def item(dataset: Dataset) -> bytes:
    return ITEM + body(dataset) + ITEM_END


@lru_cache(maxsize=16384)
def evaluation(name: Concept, value: Concept) -> bytes:
    """A CODE item (a finding and its presence), the same bytes every time."""
    return item(hd.sr.QualitativeEvaluation(CodedConcept(*name), CodedConcept(*value))[0])


@lru_cache(maxsize=16384)
def _measurement_head(name: Concept, unit: Concept) -> tuple[bytes, bytes]:
    """A NUM item's elements before its measured value, and the value's units element."""
    measurement = hd.sr.Measurement(name=CodedConcept(*name), value=0.5, unit=CodedConcept(*unit))
    item_dataset = measurement[0]
    measured = item_dataset.MeasuredValueSequence[0]
    del item_dataset.MeasuredValueSequence
    units = Dataset()
    units.MeasurementUnitsCodeSequence = measured.MeasurementUnitsCodeSequence
    return body(item_dataset), body(units)


def measurement(name: Concept, value: float, unit: Concept) -> bytes:
    """A NUM item with its value as highdicom writes it: Floating Point Value and the same
    number as a Decimal String (at most 16 characters)."""
    head, units = _measurement_head(name, unit)
    text = DS(value, auto_format=True)
    number = getattr(text, "original_string", None) or str(text)
    if len(number) % 2:
        number += " "
    return b"".join(
        (
            ITEM,
            head,
            MEASURED_VALUE_SEQUENCE,
            ITEM,
            units,
            FLOATING_POINT_VALUE,
            struct.pack("<d", float(value)),
            NUMERIC_VALUE,
            struct.pack("<H", len(number)),
            number.encode("ascii"),
            ITEM_END,
            SEQUENCE_END,
            ITEM_END,
        )
    )


def group(shape: GroupShape, tracking_uid: str, source_uid: str, findings: bytes) -> bytes:
    """A measurement group item: the kept group of this shape with its tracking UID and source
    image filled in and the findings' items where highdicom puts them (after the group's own
    items, before the source image)."""
    before, after = _group_template(shape)
    return b"".join(
        (
            before.replace(_uid(TRACKING_UID_MARK), _uid(tracking_uid)),
            findings,
            after.replace(_uid(SOURCE_UID_MARK), _uid(source_uid)),
        )
    )


def _uid(value: str) -> bytes:
    """A UI element's VR, length and value (padded with NUL to an even length)."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return b"UI" + struct.pack("<H", len(data)) + data


@lru_cache(maxsize=1024)
def _group_template(shape: GroupShape) -> tuple[bytes, bytes]:
    """The group built by highdicom once, with stand-in UIDs and no findings, encoded with
    undefined lengths throughout (so a value can change length in place): the bytes before
    the findings and those after."""
    name, version, parameters = shape.algorithm
    built = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=TRACKING_UID_MARK, identifier=shape.label),
        algorithm_id=hd.sr.AlgorithmIdentification(name, version, list(parameters)),
        finding_sites=[
            hd.sr.FindingSite(
                CodedConcept(*shape.site),
                laterality=CodedConcept(*shape.laterality) if shape.laterality else None,
            )
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(shape.source_class_uid, SOURCE_UID_MARK)
        ],
    )[0]
    children = list(built.ContentSequence)
    del built.ContentSequence  # the last element of the item: its items are written below
    for child in children:
        _undefined_lengths(child)
    sources = next(n for n, child in enumerate(children) if child.ValueType == "IMAGE")
    before = ITEM + body(built) + CONTENT_SEQUENCE_START
    before += b"".join(item(child) for child in children[:sources])
    after = b"".join(item(child) for child in children[sources:]) + SEQUENCE_END + ITEM_END
    return before, after


def _undefined_lengths(dataset: Dataset) -> None:
    dataset.is_undefined_length_sequence_item = True
    for element in dataset.elements():
        if element.VR == "SQ" and not isinstance(element, RawDataElement):
            element.is_undefined_length = True
            for child in element.value:
                _undefined_lengths(child)


def raw_sequence(items: bytes) -> RawDataElement:
    """A Content Sequence of encoded items, written as it is."""
    return RawDataElement(CONTENT_SEQUENCE, "SQ", 0xFFFFFFFF, items, 0, False, True)
