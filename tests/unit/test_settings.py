from pathlib import Path

import pytest
from pydantic import ValidationError

from services.settings import DicomNode, Settings


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
    monkeypatch.setenv("EYESCREEN_ROUTE_BY_AE", "FUNDUSCAM=fundus,SLITLAMP=anterior")
    settings = Settings()
    assert settings.sr_destinations == [
        DicomNode("PACS", "127.0.0.1", 11113),
        DicomNode("ARCHIVE", "pacs.local", 104),
    ]
    assert settings.route_by_ae == {"FUNDUSCAM": "fundus", "SLITLAMP": "anterior"}


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


def test_bad_route_mapping_is_explained() -> None:
    with pytest.raises(ValidationError, match="AE=fundus"):
        Settings(route_by_ae="CAM=retina")  # type: ignore[arg-type]
