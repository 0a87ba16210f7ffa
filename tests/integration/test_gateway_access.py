"""Who may connect and how much they may send: AE allow-list bound to addresses, DICOM TLS with
client certificates (DCMTK storescu +tls), association and size limits, non-image classes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import JPEGBaseline8Bit
from pynetdicom import AE

from dicom_gateway import statuses as st
from dicom_gateway.guard import DecodeTimeout, InspectorPool
from dicom_gateway.inspection import Limits
from services.db.models import Instance
from tests import dicom_corpus as corpus
from tests.dicom_files import write_photo_dicom
from tests.dicom_peers import storescu
from tests.gateway_harness import Gateway
from tests.pki import pki

pytestmark = pytest.mark.integration
__all__ = ["pki"]  # the fixture


@pytest.fixture
def make_gateway(database_url: str, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    started: list[Gateway] = []

    def make(**settings: object) -> Gateway:
        gateway = Gateway(database_url, tmp_path / f"var{len(started)}", **settings)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        gateway.server.shutdown()


def _rejected(result: subprocess.CompletedProcess[str]) -> bool:
    text = result.stdout + result.stderr
    return result.returncode != 0 and "Association Rejected" in text


def test_only_configured_sources_may_associate(
    make_gateway, fundus_photo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(dicom_sources="FUNDUSCAM@127.0.0.1=fundus,BOUNDCAM@10.9.9.9=fundus")
    write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
    assert _rejected(storescu(gw.port, [tmp_path / "op.dcm"], calling="STRANGER"))
    assert _rejected(storescu(gw.port, [tmp_path / "op.dcm"], calling="BOUNDCAM"))  # wrong address
    assert gw.count(Instance) == 0
    assert gw.storescu(tmp_path / "op.dcm", calling="FUNDUSCAM") == [st.SUCCESS]


def test_source_route_wins_over_attributes(
    make_gateway, fundus_photo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(dicom_sources="SLITLAMP=anterior")
    write_photo_dicom(fundus_photo, tmp_path / "op.dcm")  # coded as retina
    assert gw.storescu(tmp_path / "op.dcm", calling="SLITLAMP") == [st.SUCCESS]
    with gw.sessions() as session:
        assert session.query(Instance).one().route == "anterior"


def test_station_name_routes_when_the_source_does_not(
    make_gateway, fundus_photo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(station_routes="SL-ROOM-3=anterior")
    ds = write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
    del ds.AnatomicRegionSequence
    ds.StationName = "SL-ROOM-3"
    ds.save_as(tmp_path / "op.dcm")
    assert gw.storescu(tmp_path / "op.dcm") == [st.SUCCESS]
    with gw.sessions() as session:
        assert session.query(Instance).one().route == "anterior"


def test_non_image_sop_class_is_refused_at_negotiation(gateway: Gateway, tmp_path: Path) -> None:
    sr = corpus.structured_report(tmp_path / "sr.dcm")
    result = storescu(gateway.port, [sr], extra=("-R",), all_syntaxes=False)
    assert result.returncode != 0
    assert "No Acceptable Presentation Contexts" in result.stdout + result.stderr
    assert gateway.count(Instance) == 0


def test_association_limit(make_gateway, fundus_photo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(max_associations=1)
    write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
    holder = AE(ae_title="HOLDER")
    holder.add_requested_context("1.2.840.10008.1.1")
    held = holder.associate("127.0.0.1", gw.port, ae_title="EYESCREEN")
    assert held.is_established
    try:
        assert _rejected(storescu(gw.port, [tmp_path / "op.dcm"]))
    finally:
        held.release()
    assert gw.storescu(tmp_path / "op.dcm") == [st.SUCCESS]


def test_size_limits(make_gateway, fundus_photo: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    small = make_gateway(max_dataset_mb=1)
    big = corpus.native_dataset(fundus_photo, size=1024)  # 3 MiB uncompressed
    big.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    assert small.storescu(tmp_path / "big.dcm") == [st.TOO_LARGE]
    tight = make_gateway(max_decoded_mb=1)
    jpeg = corpus.write_in_syntax(big, JPEGBaseline8Bit, tmp_path / "jpeg.dcm")  # small on the wire
    assert jpeg.stat().st_size < 1 << 20
    assert tight.storescu(jpeg) == [st.TOO_LARGE]
    assert small.count(Instance) == 0 and tight.count(Instance) == 0


def test_a_stuck_decode_is_killed_and_the_inspector_replaced(
    fundus_photo: Path, tmp_path: Path
) -> None:
    write_photo_dicom(fundus_photo, tmp_path / "photo.dcm")
    encoded = (tmp_path / "photo.dcm").read_bytes()
    pool = InspectorPool(Limits(), workers=1, timeout_s=0.001)
    try:
        with pytest.raises(DecodeTimeout):
            pool.inspect(encoded)
        pool.timeout_s = 60
        assert pool.inspect(encoded).rows > 0  # the replacement works
    finally:
        pool.close()


# --- TLS -------------------------------------------------------------------------------------


def test_tls_with_client_certificates(
    make_gateway, pki: Path, fundus_photo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    gw = make_gateway(
        tls_certificate=pki / "server.pem",
        tls_private_key=pki / "server.key",
        tls_client_ca=pki / "ca.pem",
    )
    write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
    with_cert = (
        "+tls",
        str(pki / "client.key"),
        str(pki / "client.pem"),
        "+cf",
        str(pki / "ca.pem"),
    )
    assert gw.storescu(tmp_path / "op.dcm", extra=with_cert) == [st.SUCCESS]
    anonymous = storescu(gw.port, [tmp_path / "op.dcm"], extra=("+tla", "+cf", str(pki / "ca.pem")))
    assert anonymous.returncode != 0  # no client certificate: the handshake fails
    plain = storescu(gw.port, [tmp_path / "op.dcm"])
    assert plain.returncode != 0  # plain TCP to a TLS port
    assert gw.count(Instance) == 1


def test_each_source_brings_its_cases_to_its_own_site(
    make_gateway, fundus_photo: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Issue 21: one gateway serves several clinics. The calling AE title, else the Station
    Name, else the caller's address picks the site; others go to EYESCREEN_SITE."""
    from sqlalchemy import select

    from services.db.models import ScreeningCase, Study

    gateway = make_gateway(
        site="MAIN", source_sites="CAM-NORTH=NORTH,ROOM-7=EAST,127.0.0.9=NOWHERE"
    )
    sent = {}
    for name, calling, station in (
        ("north", "CAM-NORTH", ""),
        ("east", "SOMECAM", "ROOM-7"),
        ("main", "SOMECAM", ""),
    ):
        ds = write_photo_dicom(fundus_photo, tmp_path / f"{name}.dcm", patient_id=name)
        if station:
            ds.StationName = station
            ds.save_as(tmp_path / f"{name}.dcm", enforce_file_format=True)
        assert gateway.storescu(tmp_path / f"{name}.dcm", calling=calling) == [0]
        sent[name] = ds.StudyInstanceUID
    with gateway.sessions() as session:
        site_of = dict(
            session.execute(
                select(Study.study_instance_uid, ScreeningCase.site).join(
                    ScreeningCase, ScreeningCase.study_pk == Study.id
                )
            ).all()
        )
    assert {name: site_of[uid] for name, uid in sent.items()} == {
        "north": "NORTH",
        "east": "EAST",
        "main": "MAIN",
    }


def test_source_sites_are_written_source_equals_site() -> None:
    from services.intake.sites import SourceSites
    from services.kernel.settings import Settings

    settings = Settings(site="MAIN", source_sites="CAM-1=NORTH, 10.0.4.7=SOUTH")
    sites = SourceSites(settings.site, settings.source_sites)
    assert sites.site_of("CAM-1") == "NORTH"
    assert sites.site_of("X", "", "10.0.4.7") == "SOUTH"
    assert sites.site_of("X", "Y", "10.0.0.1") == "MAIN"
    with pytest.raises(ValueError, match="SOURCE=SITE"):
        Settings(source_sites="CAM-1")
