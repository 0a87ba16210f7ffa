"""Nobody past their site or role (issue 21, section 2): the statistician's export, API tokens,
images of other sites, log-in limits, re-enabled accounts, huge ids, and where the web
application listens by default."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.db.models import AuditEvent, CaseRead, Person
from services.kernel.settings import Settings
from tests.clinic import PASSWORD, Clinic, clinic, instance_ids, open_clinic, sign_in

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture


def _person(clinic: Clinic, username: str) -> Person:
    with clinic.runtime.sessions() as session:
        return session.scalars(select(Person).where(Person.username == username)).one()


def _audit(clinic: Clinic, action: str) -> list[AuditEvent]:
    with clinic.runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_a_statistician_asking_for_another_site_is_refused_and_audited(clinic: Clinic) -> None:
    clinic.case(site="SOUTH")
    stan, csrf = clinic.login("stan")  # a statistician of NORTH
    answer = stan.post("/stats/export", data={"csrf_token": csrf, "site": "SOUTH"})
    assert answer.status_code == 403 and "SOUTH" in answer.text
    assert answer.headers["content-type"].startswith("text/html")  # no archive
    (refused,) = _audit(clinic, "stats.refused")
    assert refused.detail["asked"] == ["SOUTH"] and refused.detail["refused"] == ["SOUTH"]
    assert _audit(clinic, "stats.export") == []


def test_an_admin_cannot_see_or_make_another_persons_token(clinic: Clinic) -> None:
    case = clinic.case()
    admin, csrf = clinic.login("admin")
    grace = _person(clinic, "grace")
    shown = admin.post(f"/admin/users/{grace.id}/token", data={"csrf_token": csrf})
    assert shown.status_code == 404 and "api-token" not in shown.text
    assert _person(clinic, "grace").api_token_sha256 is None
    own, own_csrf = clinic.login("grace")
    wrong = own.post("/account/token", data={"csrf_token": own_csrf, "password": "not hers!"})
    assert wrong.status_code == 422 and "api-token" not in wrong.text
    page = own.post("/account/token", data={"csrf_token": own_csrf, "password": PASSWORD})
    token = page.text.split('id="api-token">')[1].split("<")[0]
    body = {"study_instance_uid": clinic.study_uid(case), "eyes": {"R": {}, "L": {}}}
    api = clinic.client()
    made = api.post("/api/reads", json=body, headers={"Authorization": f"Bearer {token}"})
    assert made.status_code == 201, made.text
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(CaseRead)).one().grader_pk == grace.id
    revoked = admin.post(f"/admin/users/{grace.id}/revoke-token", data={"csrf_token": csrf})
    assert revoked.status_code == 303
    assert api.get("/api/worklist", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_another_sites_image_and_a_missing_one_get_the_same_answer(clinic: Clinic) -> None:
    north = clinic.case()
    image = instance_ids(clinic, north)[0]
    oscar, _ = clinic.login("oscar")  # a grader of SOUTH
    for kind in ("images", "heatmaps"):
        elsewhere = oscar.get(f"/{kind}/{image}.png")
        missing = oscar.get(f"/{kind}/987654321.png")
        assert elsewhere.status_code == missing.status_code == 404, kind
        assert elsewhere.json() == missing.json() == {"detail": "no such image"}, kind


def test_failed_log_ins_are_limited_per_address_and_an_admin_unlocks(clinic: Clinic) -> None:
    from webapp.login_pages import ADDRESS_LIMIT

    guesser = clinic.client()  # every test client comes from one address, "testclient"
    for _ in range(5):
        assert sign_in(guesser, "sonia", "wrong password").status_code == 401
    assert sign_in(clinic.client(), "sonia", PASSWORD).status_code == 401  # locked
    admin, csrf = clinic.login("admin")
    sonia = _person(clinic, "sonia")
    users = admin.get("/admin/users").text
    assert f'action="/admin/users/{sonia.id}/unlock"' in users
    assert "locked until" in users  # the state says so, not just "active"
    unlocked = admin.post(f"/admin/users/{sonia.id}/unlock", data={"csrf_token": csrf})
    assert unlocked.status_code == 303
    assert "locked until" not in admin.get("/admin/users").text
    assert sign_in(clinic.client(), "sonia", PASSWORD).status_code == 303
    for number in range(ADDRESS_LIMIT - 6):  # six failed so far, the locked try included
        assert sign_in(guesser, f"nobody{number}", "wrong password").status_code == 401
    throttled = sign_in(guesser, "grace", PASSWORD)  # even the right password, from there
    assert throttled.status_code == 429
    for _ in range(5):  # refused before the account is touched: no lock-out by a guesser
        assert sign_in(guesser, "arthur", "wrong password").status_code == 429
    assert _person(clinic, "arthur").locked_until is None
    assert len(_audit(clinic, "login.throttled")) == 6


def test_a_re_enabled_account_needs_a_new_sign_in(clinic: Clinic) -> None:
    grace, _ = clinic.login("grace")
    assert grace.get("/worklist").status_code == 200
    admin, csrf = clinic.login("admin")
    person = _person(clinic, "grace")
    assert (
        admin.post(f"/admin/users/{person.id}/disable", data={"csrf_token": csrf}).status_code
        == 303
    )
    assert (
        admin.post(f"/admin/users/{person.id}/enable", data={"csrf_token": csrf}).status_code == 303
    )
    again = grace.get("/worklist")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


HUGE_ID_PATHS = [
    "/cases/99999999999999999999",
    "/images/99999999999999999999.png",
    "/heatmaps/99999999999999999999.png",
    "/arbitration/99999999999999999999",
    "/worklist?page=99999999999999999999",
    "/cases/next?after=99999999999999999999",
    "/admin/audit?case=99999999999999999999",
]


@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_ids_beyond_64_bits_are_refused_not_a_server_error(
    database: str, postgres_url: str, tmp_path: Path
) -> None:
    """On SQLite (the embedded profile) such an id overflowed in the driver; on PostgreSQL
    the page offset did. Each is refused before any query now."""
    url = postgres_url if database == "postgresql" else f"sqlite:///{tmp_path / 'clinic.db'}"
    with open_clinic(url, tmp_path) as opened:
        admin, _ = opened.login("admin")
        arbiter, _ = opened.login("arthur")
        for path in HUGE_ID_PATHS:
            client = admin if path.startswith("/admin") else arbiter
            answer = client.get(path)
            wanted = (200,) if path.startswith("/admin") else (404, 422)
            assert answer.status_code in wanted, (path, answer.status_code)
        malformed = arbiter.get("/cases/abc")  # a page that says so, not FastAPI's JSON
        assert malformed.status_code == 422 and "not valid" in malformed.text
        assert malformed.headers["content-type"].startswith("text/html")


def test_without_a_certificate_the_web_application_listens_on_loopback(tmp_path: Path) -> None:
    from eyescreen.web_commands import listening_note

    plain = Settings(data_dir=tmp_path)
    assert plain.web_bind_host == "127.0.0.1"
    assert "this machine" in listening_note(plain.web_bind_host, tls=False)
    chosen = Settings(data_dir=tmp_path, web_host="0.0.0.0")
    assert chosen.web_bind_host == "0.0.0.0"
    assert "WARNING" in listening_note(chosen.web_bind_host, tls=False)
