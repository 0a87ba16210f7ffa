"""One real screening pass: DCMTK storescu -> gateway -> Celery worker -> SR -> DCMTK storescp.

Runs the service as a user would (``eyescreen up``) on the embedded default (SQLite and the
SQLite broker) and on the production profile (PostgreSQL and Redis).
"""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread

from tests.clinic import sign_in
from tests.conftest import free_port, run
from tests.dicom_files import write_photo_dicom
from tests.dicom_peers import storescu
from tests.pki import pki
from tests.service_harness import (
    eyescreen,
    pacs,
    service_env,
    start_service,
    stop_service,
    wait_for,
)

__all__ = ["pacs", "pki"]

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("profile", ["embedded", "postgres-redis"])
def test_photo_in_structured_report_out(
    profile: str,
    request: pytest.FixtureRequest,
    pacs: tuple[int, Path],
    fundus_photo: Path,
    tmp_path: Path,
) -> None:
    pacs_port, inbox = pacs
    port, web_port = free_port(), free_port()
    certificates = request.getfixturevalue("pki")
    env = service_env(
        tmp_path,
        port,
        sr_destinations=f"PACS@127.0.0.1:{pacs_port}",
        site="NORTH",
        web_port=str(web_port),
        web_certificate=str(certificates / "server.pem"),
        web_private_key=str(certificates / "server.key"),
    )
    if profile == "postgres-redis":
        env["EYESCREEN_DATABASE_URL"] = request.getfixturevalue("postgres_url")
        env["EYESCREEN_BROKER_URL"] = request.getfixturevalue("redis_url")
    log = tmp_path / "service.log"
    service = start_service(env, log)
    try:
        sent = write_photo_dicom(
            fundus_photo,
            tmp_path / "op.dcm",
            patient_id="E2E-1",
            patient_name="Doe^<b>Jane</b>",
            laterality="L",
        )
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 60, "the gateway", log)
        result = run(
            [
                "/usr/bin/storescu",
                "-xy",
                "-aec",
                "EYESCREEN",
                "127.0.0.1",
                str(port),
                str(tmp_path / "op.dcm"),
            ],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        wait_for(lambda: any(inbox.iterdir()), 180, "the SR at the PACS", log)
        received = next(inbox.iterdir())
        dump = run(["/usr/bin/dsrdump", "+Pu", str(received)])
        assert dump.returncode == 0, dump.stderr
        assert "Imaging Measurement Report" in dump.stdout
        assert str(sent.SOPInstanceUID) in dump.stdout
        sr = dcmread(received)
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
        ref = evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == sent.SOPInstanceUID
        assert sr.PatientID == "E2E-1"
        time.sleep(1)
        assert len(list(inbox.iterdir())) == 1  # exactly once
        assert "Doe" not in log.read_text() and "E2E-1" not in log.read_text()  # no PHI in logs
        _the_case_is_on_the_graders_worklist(env, web_port, certificates / "ca.pem", log)
    finally:
        code = stop_service(service)
    assert code == 0, log.read_text()[-3000:]


def _the_case_is_on_the_graders_worklist(
    env: dict[str, str], web_port: int, ca: Path, log: Path
) -> None:
    """``eyescreen up`` serves the web application over HTTPS; a grader added with
    ``eyescreen users add`` signs in and finds the case."""
    added = eyescreen(
        "users",
        "add",
        "gina",
        "--name",
        "Grader^Gina",
        "--role",
        "grader",
        "--site",
        "NORTH",
        env=env,
        stdin="a long enough password\n",
    )
    assert added.returncode == 0, added.stderr
    base = f"https://127.0.0.1:{web_port}"
    wait_for(lambda: f"https://localhost:{web_port}/" in log.read_text(), 60, "the web URL", log)
    tls = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(base_url=base, verify=tls, follow_redirects=False) as client:
        wait_for(lambda: _answers(client), 60, "the web application", log)
        assert client.get("/worklist").status_code == 303  # to the log-in page
        signed = sign_in(client, "gina", "a long enough password")
        assert signed.status_code == 303, signed.text
        cookie = signed.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        page = client.get("/worklist")
        assert page.status_code == 200 and 'id="waiting">1<' in page.text


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/login").status_code == 200
    except httpx.HTTPError:
        return False


def test_pacs_down_when_the_result_is_ready_gets_it_once_when_back(
    fundus_photo: Path, tmp_path: Path
) -> None:
    pacs_port, port, inbox = free_port(), free_port(), tmp_path / "pacs"
    inbox.mkdir()
    env = service_env(
        tmp_path,
        port,
        sr_destinations=f"PACS@127.0.0.1:{pacs_port}",
        sr_retry_base_s="1",
        pdf_reports="false",
    )
    log = tmp_path / "service.log"
    service = start_service(env, log)
    pacs = None
    try:
        write_photo_dicom(fundus_photo, tmp_path / "op.dcm", laterality="R")
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 60, "the gateway", log)
        assert storescu(port, [tmp_path / "op.dcm"]).returncode == 0

        def failed_attempts() -> bool:
            listing = eyescreen("reports", "list", env=env)
            return " pending " in listing.stdout and "refused or unreachable" in listing.stdout

        wait_for(failed_attempts, 120, "a failed delivery to the absent PACS", log)
        pacs = subprocess.Popen(
            ["/usr/bin/storescp", "-aet", "PACS", "-od", str(inbox), str(pacs_port)],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        wait_for(lambda: any(inbox.iterdir()), 120, "the SR once the PACS is back", log)
        time.sleep(5)  # a duplicate would arrive within the next retry intervals
        assert len(list(inbox.iterdir())) == 1
        listing = eyescreen("reports", "list", env=env).stdout
        assert " delivered " in listing
    finally:
        stop_service(service)
        if pacs is not None:
            pacs.terminate()
            pacs.wait(10)


def test_an_urgent_source_overtakes_a_backlog(fundus_photo: Path, tmp_path: Path) -> None:
    pacs_port, port, inbox = free_port(), free_port(), tmp_path / "pacs"
    inbox.mkdir()
    env = service_env(
        tmp_path,
        port,
        sr_destinations=f"PACS@127.0.0.1:{pacs_port}",
        urgent_sources="ERCAM",
        worker_concurrency="1",
        inference_batch_size="1",
    )
    log = tmp_path / "service.log"
    service = start_service(env, log)
    pacs = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "PACS", "-od", str(inbox), str(pacs_port)],
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 60, "the gateway", log)
        backlog = [
            write_photo_dicom(fundus_photo, tmp_path / f"b{n}.dcm", patient_id=f"B{n}")
            and tmp_path / f"b{n}.dcm"
            for n in range(40)
        ]
        urgent = write_photo_dicom(fundus_photo, tmp_path / "u.dcm", patient_id="URGENT")
        assert storescu(port, backlog).returncode == 0
        assert storescu(port, [tmp_path / "u.dcm"], calling="ERCAM").returncode == 0

        def urgent_arrived() -> bool:
            return any(
                urgent.SOPInstanceUID in p.read_bytes().decode("latin-1") for p in inbox.iterdir()
            )

        wait_for(urgent_arrived, 120, "the urgent SR", log)
        assert len(list(inbox.iterdir())) < 30, "the urgent image waited behind the backlog"
        lane = [
            line for line in log.read_text().splitlines() if "Task screening.infer_urgent" in line
        ]
        assert lane and all(line.split()[2] == "urgent" for line in lane), lane
    finally:
        stop_service(service)
        pacs.terminate()
        pacs.wait(10)


# Normal eyes of the shared set that the shipped fundus model does not refer at its operating
# point (they are training photographs: this checks the service decides as the model does,
# not the model); each is its own patient and visit here.
NORMAL_PHOTOS = ("normal/1034_left.jpg", "normal/2331_right.jpg", "normal/2346_left.jpg")


def test_normal_photographs_get_no_referral_through_the_running_service(
    pacs: tuple[int, Path], tmp_path: Path
) -> None:
    """The referral decision, not just a report: normal eyes sent over DICOM come back as
    "no referral" in the SR the PACS receives."""
    import highdicom as hd

    from tests.conftest import FUNDUS, needs_shared_data

    needs_shared_data()
    pacs_port, inbox = pacs
    port = free_port()
    env = service_env(tmp_path, port, sr_destinations=f"PACS@127.0.0.1:{pacs_port}")
    log = tmp_path / "service.log"
    service = start_service(env, log)
    try:
        files = []
        for i, photo in enumerate(NORMAL_PHOTOS):
            target = tmp_path / f"normal-{i}.dcm"
            write_photo_dicom(FUNDUS / "images" / photo, target, patient_id=f"NORM-{i}")
            files.append(str(target))
        echo = ["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(port)]
        wait_for(lambda: run(echo).returncode == 0, 60, "the gateway", log)
        result = run(
            ["/usr/bin/storescu", "-xy", "-aec", "EYESCREEN", "127.0.0.1", str(port), *files],
            env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr
        wait_for(lambda: len(list(inbox.iterdir())) >= len(files), 240, "three SRs", log)
        referrals = {}
        for path in inbox.iterdir():
            sr = hd.sr.srread(path)
            [summary] = [
                item.value.meaning
                for group in sr.content.get_image_measurement_groups()
                for item in group.get_qualitative_evaluations()
                if item.name.meaning == "Referral to ophthalmologist recommended"
            ]
            referrals[sr.PatientID] = summary
        assert referrals == {f"NORM-{i}": "No" for i in range(len(files))}
    finally:
        code = stop_service(service)
    assert code == 0, log.read_text()[-3000:]
