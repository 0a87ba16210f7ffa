from pathlib import Path

import pytest
from pydantic import ValidationError

from services.kernel.settings import DicomNode, Settings


def test_defaults_are_embedded_under_var(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("EYESCREEN_DATA_DIR", "EYESCREEN_DATABASE_URL", "EYESCREEN_BROKER_URL"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings()
    assert settings.data_path == Path("./var").resolve()
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_broker_url.startswith("eyescreen-sqlite+sqlite:///")
    assert settings.is_embedded


def test_destinations_parse_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EYESCREEN_SR_DESTINATIONS", "PACS@127.0.0.1:11113, ARCHIVE@pacs.local:104")
    monkeypatch.setenv(
        "EYESCREEN_DICOM_SOURCES", "FUNDUSCAM@10.0.0.5|10.0.0.6=fundus,SLITLAMP=anterior,OCT=auto"
    )
    monkeypatch.setenv("EYESCREEN_STATION_ROUTES", "SL-ROOM-3=anterior")
    settings = Settings()
    assert settings.sr_destinations == [
        DicomNode("PACS", "127.0.0.1", 11113),
        DicomNode("ARCHIVE", "pacs.local", 104),
    ]
    assert settings.routes_by_ae == {"FUNDUSCAM": "fundus", "SLITLAMP": "anterior"}
    assert settings.dicom_sources[0].addresses == {"10.0.0.5", "10.0.0.6"}
    assert settings.dicom_sources[0].admits("10.0.0.6")
    assert not settings.dicom_sources[0].admits("10.0.0.7")
    assert settings.dicom_sources[1].admits("192.168.1.1")  # not bound to an address
    assert settings.station_routes == {"SL-ROOM-3": "anterior"}


@pytest.mark.parametrize(
    "bad", ["PACS127.0.0.1:11113", "PACS@host", "WAYTOOLONGAETITLE17@h:1", "PACS@h:70000"]
)
def test_bad_destination_is_named(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("EYESCREEN_SR_DESTINATIONS", bad)
    with pytest.raises(ValidationError, match="sr_destinations"):
        Settings()


def test_production_refuses_sqlite() -> None:
    with pytest.raises(ValidationError, match="PostgreSQL"):
        Settings(environment="production")


@pytest.mark.parametrize("bad", ["CAM=retina", "CAM@not-an-ip=fundus", "CAM"])
def test_bad_source_is_explained(bad: str) -> None:
    with pytest.raises(ValidationError, match="dicom_sources"):
        Settings(dicom_sources=bad)  # type: ignore[arg-type]


def test_tls_needs_certificate_and_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="both"):
        Settings(tls_certificate=tmp_path / "server.pem")


def test_a_destination_may_ask_for_tls() -> None:
    node = DicomNode.parse("PACS@pacs.hospital.org:2762+tls")
    assert node.tls and node.port == 2762 and str(node) == "PACS@pacs.hospital.org:2762+tls"
    assert not DicomNode.parse("PACS@pacs:104").tls


def test_log_level_is_validated_like_every_other_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EYESCREEN_LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError, match="log_level"):
        Settings()
    monkeypatch.setenv("EYESCREEN_LOG_LEVEL", " debug")
    assert Settings().log_level == "DEBUG"


def test_every_setting_is_documented_in_the_readme() -> None:
    """The README's settings table names each variable (``EYESCREEN_A_B`` / ``_C`` rows name
    two); a setting missing from it is a defect a newcomer would trip over."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented: set[str] = set()
    for row in readme.splitlines():
        if not row.startswith("| `EYESCREEN_"):
            continue
        cell = row.split("|")[1]
        names = re.findall(r"`(EYESCREEN_[A-Z0-9_]+|_[A-Z0-9_]+)`", cell)
        base = names[0].removeprefix("EYESCREEN_")
        parts = base.split("_")
        for name in names:
            if name.startswith("EYESCREEN_"):
                documented.add(name.removeprefix("EYESCREEN_"))
                continue
            for k in range(1, len(parts) + 1):  # `_X` replaces the last k words of the first
                documented.add(("_".join(parts[:-k]) + name).lstrip("_"))
    missing = [name for name in Settings.model_fields if name.upper() not in documented]
    assert missing == []
