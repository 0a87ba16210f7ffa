"""DICOM names and dates on the pages as people write them (issue 21: the pages showed
``19500101`` and ``Admin^Ada``)."""

from datetime import datetime

from webapp.display import dicom_date, person_name, sex, when


def test_names_in_the_order_people_write_them() -> None:
    assert person_name("Admin^Ada") == "Ada Admin"
    assert person_name("Doe^Jane^Ann^Dr^Jr") == "Dr Jane Ann Doe Jr"
    assert person_name("Yamada^Tarou=山田^太郎") == "Tarou Yamada"  # the alphabetic group
    assert person_name("Doe") == "Doe" and person_name("") == ""
    assert person_name("Tester^<script>x()</script>") == "<script>x()</script> Tester"


def test_dates_unambiguous_and_what_does_not_parse_kept() -> None:
    assert dicom_date("19500101") == "1 Jan 1950"
    assert dicom_date("20261206") == "6 Dec 2026"
    assert dicom_date("") == "not given"
    assert dicom_date("1950") == "1950" and dicom_date("19501340") == "19501340"
    assert sex("F") == "female" and sex("") == "sex not given"


def test_time_stamps() -> None:
    assert when(datetime(2026, 12, 6, 21, 41)) == "6 Dec 2026, 21:41"
