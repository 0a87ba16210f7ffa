"""The clinicians' web application over HTTP against PostgreSQL: access control, CSRF, escaping,
reading and triage, arbitration, reads from CSV and the API, and the append-only audit trail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    AuditEvent,
    CaseRead,
    OutboxMessage,
    Person,
    Report,
    Triage,
)
from services.db.session import transaction
from services.kernel.task_names import TaskName
from tests.clinic import (
    PASSWORD,
    Clinic,
    clinic,
    instance_ids,
    open_clinic,
    other_read,
    read_form,
    sign_in,
)
from webapp.app import routers

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture


def _read_form(csrf: str, eyes: dict, then: str = "") -> dict:  # type: ignore[type-arg]
    return read_form(csrf, eyes, then=then)


def test_nothing_but_the_login_page_without_a_session(clinic: Clinic) -> None:
    case = clinic.case()
    [image, _] = instance_ids(clinic, case)
    client = clinic.client()
    assert client.get("/login").status_code == 200
    checked = 0
    for route in (r for router in routers() for r in router.routes):
        if not isinstance(route, APIRoute) or route.path == "/login":
            continue
        path = route.path.replace("{case_id}", str(case)).replace("{instance_id}", str(image))
        path = re.sub(r"\{[a-z_]+\}", "1", path)
        for method in route.methods:
            answer = client.request(method, path)
            refused_page = answer.status_code == 303 and answer.headers["location"].startswith(
                "/login"
            )
            assert refused_page or answer.status_code == 401, (method, path, answer.status_code)
            assert str(case) not in answer.text or (method == "GET" and refused_page)
            checked += 1
    assert checked >= 20
    assert client.get("/static/app.css").status_code == 200  # no patient data in static files


def test_roles_sites_csrf_and_escaping(clinic: Clinic) -> None:
    case = clinic.case(patient_name="Evil^<script>alert(1)</script>")
    elsewhere = clinic.case(site="SOUTH")
    grader, csrf = clinic.login("grace")
    page = grader.get(f"/cases/{case}")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert grader.get("/arbitration").status_code == 403  # a grader cannot open arbitration
    assert grader.get("/admin/users").status_code == 403
    assert grader.get(f"/cases/{elsewhere}").status_code == 404  # another site's case
    [image, _] = instance_ids(clinic, elsewhere)
    assert grader.get(f"/images/{image}.png").status_code == 404
    eyes = {"R": {"codes": [], "ungradable": None}, "L": {"codes": [], "ungradable": None}}
    form = _read_form(csrf, eyes)
    form.pop("csrf_token")
    assert grader.post(f"/cases/{case}/read", data=form).status_code == 403  # no CSRF token
    form["csrf_token"] = "forged"
    assert grader.post(f"/cases/{case}/read", data=form).status_code == 403
    with clinic.runtime.sessions() as session:
        assert session.scalar(select(CaseRead.id)) is None
    statistician, _ = clinic.login("stan")
    assert statistician.get(f"/cases/{case}").status_code == 403


def test_lease_blind_read_triage_once_then_arbitration_signed_and_revised(clinic: Clinic) -> None:
    case = clinic.case()
    model = clinic.model(case)
    grader, csrf = clinic.login("grace")
    other, _ = clinic.login("arthur")  # arbiters may grade too; the lease keeps them off
    assert "model-referral" not in grader.get(f"/cases/{case}").text  # blind before the read
    assert "Another grader is reading this case" in other.get(f"/cases/{case}").text
    read = other_read(model)
    answer = grader.post(f"/cases/{case}/read", data=_read_form(csrf, read, then="next"))
    assert answer.status_code == 303, answer.text
    after = grader.get(f"/cases/{case}").text
    assert 'id="model-referral"' in after and 'id="my-referral"' in after  # unblinded now
    again = grader.post(f"/cases/{case}/read", data=_read_form(csrf, read))
    assert again.status_code == 422  # a second read is an amendment and needs a reason
    with clinic.runtime.sessions() as session:
        triage = session.scalars(select(Triage)).one()
        arbitration = session.scalars(select(ArbitrationCase)).one()
        assert triage.to_arbitration and triage.inclusion_probability == 1.0
        assert triage.conflict in ("referral_flip", "missed_finding", "extra_finding")
        assert arbitration.rule_version == "level2.v1" and arbitration.conflict == triage.conflict
        read_row = session.scalars(select(CaseRead)).one()
        assert read_row.reading_ms == 4200 and read_row.findings == {
            eye: (["F.VRD", "F.VRD.MAC"] if read[eye]["codes"] else []) for eye in "RL"
        }
    arbiter, csrf_a = clinic.login("arthur")
    queue = arbiter.get("/arbitration")
    assert f"/arbitration/{arbitration.id}" in queue.text
    page = arbiter.get(f"/arbitration/{arbitration.id}").text
    assert "Read A" in page and "Read B" in page and "model" not in page.split("Read A")[1].lower()
    wrong = arbiter.post(
        f"/arbitration/{arbitration.id}/vote",
        data={"csrf_token": csrf_a, "choice": "A", "password": "not it at all"},
    )
    assert wrong.status_code == 422 and "password" in wrong.text
    other_choice = arbiter.post(
        f"/arbitration/{arbitration.id}/vote",
        data={
            "csrf_token": csrf_a,
            "choice": "other",
            "password": PASSWORD,
            "eye_R_state": "findings",
            "eye_R_code": ["F.GLAU.GLAU"],
            "eye_L_state": "normal",
        },
    )
    assert other_choice.status_code == 422 and "comment" in other_choice.text
    signed = arbiter.post(
        f"/arbitration/{arbitration.id}/vote",
        data={"csrf_token": csrf_a, "choice": "B", "password": PASSWORD},
    )
    assert signed.status_code == 303, signed.text
    locked = arbiter.post(
        f"/arbitration/{arbitration.id}/vote",
        data={"csrf_token": csrf_a, "choice": "A", "password": PASSWORD},
    )
    assert locked.status_code == 422
    with clinic.runtime.sessions() as session:
        decision = session.scalars(select(ArbitrationDecision)).one()
        assert decision.case_pk == case
        queued = session.scalars(
            select(OutboxMessage.args).where(OutboxMessage.task_name == TaskName.REPORT)
        ).all()
        assert [case] in queued  # the revised report is queued with the decision
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {
        "login",
        "case.view",
        "read.submit",
        "arbitration.view",
        "arbitration.refused",
        "arbitration.vote",
        "arbitration.decide",
    } <= actions
    clinic.runtime.reports().build_case(case)
    with clinic.runtime.sessions() as session:
        report = session.scalars(select(Report).order_by(Report.id.desc())).first()
        assert report is not None and report.verified and report.decision_pk == decision.id


def test_an_eye_left_blank_is_refused_not_saved_as_normal(clinic: Clinic) -> None:
    """The grader stated the right eye only: the read is refused and nothing is saved (the
    server took a blank eye for a normal one, and the page offered to submit it as normal)."""
    case = clinic.case()
    grader, csrf = clinic.login("grace")
    form = _read_form(csrf, {"R": {"codes": []}})  # eye L: no state, nothing ticked
    answer = grader.post(f"/cases/{case}/read", data=form)
    assert answer.status_code == 422 and "eye L: nothing entered" in answer.text
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(CaseRead)).all() == []
    ticked = _read_form(csrf, {"R": {"codes": []}}) | {"eye_L_code": ["F.GLAU.GLAU"]}
    assert grader.post(f"/cases/{case}/read", data=ticked).status_code == 303  # ticked: stated


def test_audit_rows_cannot_be_changed_on_postgresql(clinic: Clinic) -> None:
    clinic.login("admin")
    with clinic.runtime.sessions() as session:
        assert session.scalar(select(AuditEvent.id)) is not None
    for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"):
        with (
            pytest.raises(DBAPIError, match="append-only"),
            transaction(clinic.runtime.sessions) as session,
        ):
            session.execute(text(statement))


def test_failed_logins_are_audited_and_lock_the_account(clinic: Clinic) -> None:
    client = clinic.client()
    forged = client.post("/login", data={"username": "grace", "password": PASSWORD})
    assert forged.status_code == 403 and "eyescreen_session" not in forged.cookies  # no token
    for _ in range(5):
        assert sign_in(client, "grace", "wrong password!").status_code == 401
    locked = sign_in(client, "grace", PASSWORD)
    assert locked.status_code == 401  # locked out for a while, even with the right password
    with clinic.runtime.sessions() as session:
        failed = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "login.failed")
        ).all()
    assert len(failed) == 6 and failed[0].address


def test_logout_ends_the_session(clinic: Clinic) -> None:
    client, csrf = clinic.login("grace")
    cookie = client.cookies.get("eyescreen_session")
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    stale = clinic.client()
    stale.cookies.set("eyescreen_session", cookie or "")
    assert stale.get("/worklist").status_code == 303  # the old cookie no longer works


def test_csv_import_is_all_or_nothing_and_names_the_line(clinic: Clinic) -> None:
    first, second = clinic.case(), clinic.case()
    uid1, uid2 = clinic.study_uid(first), clinic.study_uid(second)
    admin, csrf = clinic.login("admin")
    header = "study_instance_uid,grader,eye,codes,ungradable_reason\n"
    bad = (
        header
        + f"{uid1},grace,R,F.VRD.MAC,\n{uid1},grace,L,,\n"
        + f"{uid2},grace,R,NOT.A.CODE,\n{uid2},grace,X,,\n"
    )
    answer = admin.post(
        "/reads/import", data={"csrf_token": csrf}, files={"upload": ("reads.csv", bad, "text/csv")}
    )
    assert answer.status_code == 422
    assert "line 5: eye must be R, L or U" in answer.text and "line 4:" in answer.text
    with clinic.runtime.sessions() as session:
        assert session.scalar(select(CaseRead.id)) is None  # nothing half-imported
    good = (
        header
        + f"{uid1},grace,R,F.VRD.MAC,\n{uid1},grace,L,,\n"
        + f"{uid2},grace,R,,\n{uid2},grace,L,,media opacity\n"
    )
    answer = admin.post(
        "/reads/import",
        data={"csrf_token": csrf},
        files={"upload": ("reads.csv", good, "text/csv")},
    )
    assert answer.status_code == 200 and "2 reads imported" in answer.text
    with clinic.runtime.sessions() as session:
        conflicts = dict(session.execute(select(Triage.case_pk, Triage.conflict)).all())
    assert conflicts[second] == "ungradable"  # goes to the outcome queue


def test_json_api_with_a_personal_token(clinic: Clinic) -> None:
    case = clinic.case()
    grace, csrf = clinic.login("grace")  # a token is seen by its owner only (issue 21)
    page = grace.post("/account/token", data={"csrf_token": csrf, "password": PASSWORD})
    token = page.text.split('id="api-token">')[1].split("<")[0]
    api = clinic.client()
    assert api.get("/api/worklist", headers={"Authorization": "Bearer nope"}).status_code == 401
    listing = api.get("/api/worklist", headers={"Authorization": f"Bearer {token}"}).json()
    assert [c["case"] for c in listing["cases"]] == [case]
    body = {
        "study_instance_uid": clinic.study_uid(case),
        "eyes": {"R": {"codes": ["F.VRD.XYZ"]}, "L": {}},
    }
    refused = api.post("/api/reads", json=body, headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 422 and "F.VRD.XYZ" in refused.text
    body["eyes"] = {"R": {"codes": ["F.GLAU.GLAU"]}, "L": {}}
    made = api.post("/api/reads", json=body, headers={"Authorization": f"Bearer {token}"})
    assert made.status_code == 201 and made.json()["findings"]["R"] == ["F.GLAU", "F.GLAU.GLAU"]
    assert made.json()["referral"] is True


def test_quorum_disagreement_escalates_to_a_senior_arbiter(
    postgres_url: str, tmp_path: Path
) -> None:
    from services.access import people
    from services.db.models import Role

    with open_clinic(postgres_url, tmp_path, arbitration_quorum=2) as clinic:
        with transaction(clinic.runtime.sessions) as session:
            people.add_person(session, "anna", "Anna^Test", Role.ARBITER, ["NORTH"], PASSWORD)
        case = clinic.case()
        grader, csrf = clinic.login("grace")
        form = _read_form(csrf, other_read(clinic.model(case)))
        assert grader.post(f"/cases/{case}/read", data=form).status_code == 303
        with clinic.runtime.sessions() as session:
            arbitration = session.scalars(select(ArbitrationCase)).one().id
        votes = {"arthur": "A", "anna": "B"}
        results = []
        for username, choice in votes.items():
            client, token = clinic.login(username)
            answer = client.post(
                f"/arbitration/{arbitration}/vote",
                data={"csrf_token": token, "choice": choice, "password": PASSWORD},
            )
            results.append(answer.headers["location"])
        assert "result=escalated" in results[1]
        arthur, _ = clinic.login("arthur")
        assert f'/arbitration/{arbitration}"' not in arthur.get("/arbitration").text
        senior, token = clinic.login("sonia")
        assert f'/arbitration/{arbitration}"' in senior.get("/arbitration").text
        decided = senior.post(
            f"/arbitration/{arbitration}/vote",
            data={"csrf_token": token, "choice": "B", "password": PASSWORD},
        )
        assert "result=decided" in decided.headers["location"]
        with clinic.runtime.sessions() as session:
            decision = session.scalars(select(ArbitrationDecision)).one()
            sonia = session.scalars(select(Person).where(Person.username == "sonia")).one()
            assert decision.decided_by_pk == sonia.id


def test_ungradable_goes_to_the_outcome_queue_and_qc_draws_concordant_cases(
    postgres_url: str, tmp_path: Path
) -> None:
    with open_clinic(postgres_url, tmp_path, qc_sample_rate=1.0) as clinic:
        blurred, agreed = clinic.case(), clinic.case()
        grader, csrf = clinic.login("grace")
        form = _read_form(csrf, {"R": {"codes": []}, "L": {"codes": []}})
        form["eye_R_state"], form["eye_R_reason"] = "ungradable", "small pupil"
        assert grader.post(f"/cases/{blurred}/read", data=form).status_code == 303
        model = clinic.model(agreed)
        same = {
            eye: {"codes": [c for c in model.findings[eye] if c.count(".") == 2]} for eye in "RL"
        }
        if any(eye in model.ungradable for eye in "RL"):
            pytest.skip("the model found a generated photograph ungradable")
        answer = grader.post(f"/cases/{agreed}/read", data=_read_form(csrf, same))
        assert answer.status_code == 303
        with clinic.runtime.sessions() as session:
            triage = {t.case_pk: t for t in session.scalars(select(Triage))}
        assert triage[blurred].conflict == "ungradable"
        assert triage[agreed].conflict == "qc_sample" and triage[agreed].sampled
        assert triage[agreed].inclusion_probability == 1.0  # the share drawn, here all
        arbiter, token = clinic.login("arthur")
        outcomes = arbiter.get("/arbitration?outcomes=1").text
        queue = arbiter.get("/arbitration").text
        with clinic.runtime.sessions() as session:
            ids = dict(session.execute(select(ArbitrationCase.case_pk, ArbitrationCase.id)).all())
        assert f'/arbitration/{ids[blurred]}"' in outcomes
        assert f'/arbitration/{ids[blurred]}"' not in queue
        decided = arbiter.post(
            f"/arbitration/{ids[blurred]}/vote",
            data={"csrf_token": token, "outcome": "re-image", "password": PASSWORD},
        )
        assert decided.status_code == 303
        with clinic.runtime.sessions() as session:
            assert session.get_one(ArbitrationCase, ids[blurred]).outcome == "re-image"


def test_new_graders_reads_all_go_to_the_panel_until_signed_off(
    postgres_url: str, tmp_path: Path
) -> None:
    from services.access import people
    from services.db.models import Role

    with open_clinic(postgres_url, tmp_path) as clinic:
        with transaction(clinic.runtime.sessions) as session:
            people.add_person(
                session, "newbie", "New^Bie", Role.GRADER, ["NORTH"], PASSWORD, arbitrate_all=True
            )
        case = clinic.case()
        model = clinic.model(case)
        same = {
            eye: {"codes": [c for c in model.findings[eye] if c.count(".") == 2]} for eye in "RL"
        }
        grader, csrf = clinic.login("newbie")
        assert grader.post(f"/cases/{case}/read", data=_read_form(csrf, same)).status_code == 303
        with clinic.runtime.sessions() as session:
            triage = session.scalars(select(Triage)).one()
        if model.ungradable:
            pytest.skip("the model found a generated photograph ungradable")
        assert triage.conflict == "new_grader" and triage.to_arbitration


def test_amendment_is_a_new_version_and_old_arbitrations_escalate(clinic: Clinic) -> None:
    from datetime import timedelta

    from services.db.base import utcnow
    from services.operations.recovery import triage_waiting

    case = clinic.case()
    grader, csrf = clinic.login("grace")
    read = other_read(clinic.model(case))
    assert grader.post(f"/cases/{case}/read", data=_read_form(csrf, read)).status_code == 303
    amended = _read_form(csrf, {"R": {"codes": ["F.GLAU.GLAU"]}, "L": {"codes": []}})
    amended["amend_reason"] = "missed the cupping in the right eye"
    assert grader.post(f"/cases/{case}/read", data=amended).status_code == 303
    with clinic.runtime.sessions() as session:
        versions = session.scalars(select(CaseRead).order_by(CaseRead.version)).all()
        assert [v.version for v in versions] == [1, 2]
        assert (
            versions[1].amends_pk == versions[0].id and versions[0].findings != versions[1].findings
        )
        # triaged once per version: the amendment is triaged again (issue 21)
        assert session.scalars(select(Triage)).one().read_pk == versions[1].id
    with transaction(clinic.runtime.sessions) as session:
        arbitration = session.scalars(select(ArbitrationCase)).one()
        arbitration.opened_at = utcnow() - timedelta(hours=100)
    triage_waiting(clinic.settings, clinic.runtime.sessions)
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(ArbitrationCase)).one().escalated


def test_dashboard_health_and_grader_qa_named_for_admins_only(clinic: Clinic) -> None:
    case = clinic.case()
    grader, csrf = clinic.login("grace")
    read = other_read(clinic.model(case))
    assert grader.post(f"/cases/{case}/read", data=_read_form(csrf, read)).status_code == 303
    admin, _ = clinic.login("admin")
    page = admin.get("/dashboard").text
    assert 'id="health"' in page and "last photograph read by the model" in page
    assert "<td>grace</td>" in page  # named for admins
    mine = grader.get("/dashboard").text
    assert "<td>you</td>" in mine and "<td>grace</td>" not in mine  # anonymised for graders


def test_queue_filters_and_a_site_that_reads_unblinded(postgres_url: str, tmp_path: Path) -> None:
    with open_clinic(postgres_url, tmp_path, unblinded_sites="NORTH") as clinic:
        case = clinic.case()
        model = clinic.model(case)
        grader, csrf = clinic.login("grace")
        assert 'id="model-referral"' in grader.get(f"/cases/{case}").text  # not blind here
        read = {"R": {"codes": ["F.GLAU.GLAU"]}, "L": {"codes": []}}
        if not model.referral:
            read = other_read(model)
        assert grader.post(f"/cases/{case}/read", data=_read_form(csrf, read)).status_code == 303
        with clinic.runtime.sessions() as session:
            stored = session.scalars(select(CaseRead)).one()
            arbitration = session.scalars(select(ArbitrationCase)).one_or_none()
        assert stored.blinded is False
        if arbitration is None:
            pytest.skip("the model agreed with the read")
        arbiter, _ = clinic.login("arthur")
        link = f'/arbitration/{arbitration.id}"'
        code = next(c for codes in stored.findings.values() for c in codes if c.count(".") == 2)
        assert link in arbiter.get(f"/arbitration?finding={code}&site=NORTH").text
        assert link not in arbiter.get("/arbitration?site=SOUTH").text
        assert link not in arbiter.get("/arbitration?opened_from=2999-01-01").text
        assert arbiter.get("/arbitration?opened_from=yesterday").status_code == 422
