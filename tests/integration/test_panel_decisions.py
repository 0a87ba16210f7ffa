"""The panel's decisions saved exactly as made (issue 21, section 1): a vote says only what the
arbiter entered; escalation always ends in a decision; the panel votes on the newest version of
the grader's read, and an amended read is triaged again; every signer verifies the SR; the
case keeps the model's referral for the dashboard."""

from __future__ import annotations

from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from services.access import people
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationVote,
    CaseRead,
    Person,
    Report,
    Role,
    ScreeningCase,
    Triage,
)
from services.db.session import transaction
from tests.clinic import PASSWORD, Clinic, clinic, open_clinic, other_read, read_form

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture


def _read_form(csrf: str, eyes: dict, reason: str = "") -> dict:  # type: ignore[type-arg]
    return read_form(csrf, eyes, amend_reason=reason)


def _arbitrated(clinic: Clinic) -> tuple[int, int]:
    """A case the grader read differently from the model, and its arbitration's id."""
    case = clinic.case()
    grader, csrf = clinic.login("grace")
    answer = grader.post(
        f"/cases/{case}/read", data=_read_form(csrf, other_read(clinic.model(case)))
    )
    assert answer.status_code == 303, answer.text
    with clinic.runtime.sessions() as session:
        return case, session.scalars(select(ArbitrationCase.id)).one()


def _vote(clinic: Clinic, username: str, arbitration: int, **fields: object):  # type: ignore[no-untyped-def]
    client, token = clinic.login(username)
    data = {"csrf_token": token, "password": PASSWORD} | fields
    return client.post(f"/arbitration/{arbitration}/vote", data=data)


def _add(clinic: Clinic, username: str, role: Role, site: str = "NORTH") -> None:
    with transaction(clinic.runtime.sessions) as session:
        people.add_person(session, username, f"{username.title()}^Test", role, [site], PASSWORD)


def test_another_decision_is_refused_unless_each_eye_was_entered(clinic: Clinic) -> None:
    case, arbitration = _arbitrated(clinic)
    blank = _vote(clinic, "arthur", arbitration, choice="other", comment="both reads wrong")
    assert blank.status_code == 422 and "nothing entered" in blank.text
    empty = _vote(
        clinic,
        "arthur",
        arbitration,
        choice="other",
        comment="x",
        eye_R_state="findings",
        eye_L_state="normal",
    )
    assert empty.status_code == 422 and "none ticked" in empty.text
    no_reason = _vote(
        clinic,
        "arthur",
        arbitration,
        choice="other",
        comment="x",
        eye_R_state="ungradable",
        eye_L_state="normal",
    )
    assert no_reason.status_code == 422 and "reason" in no_reason.text
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(ArbitrationVote)).all() == []
        assert session.scalars(select(ArbitrationDecision)).all() == []
    entered = _vote(
        clinic,
        "arthur",
        arbitration,
        choice="other",
        comment="glaucoma on the right",
        eye_R_state="findings",
        eye_R_code="F.GLAU.GLAU",
        eye_L_state="normal",
    )
    assert entered.status_code == 303, entered.text
    with clinic.runtime.sessions() as session:
        decision = session.scalars(select(ArbitrationDecision)).one()
        assert decision.eyes == {"R": ["F.GLAU", "F.GLAU.GLAU"], "L": []}
        assert decision.referral is True and decision.case_pk == case


def test_a_senior_who_voted_takes_the_escalated_decision(postgres_url: str, tmp_path: Path) -> None:
    """Quorum 2, the arbiter votes A, the only senior B: escalated, and the same senior
    decides (it used to answer "you have already voted" for ever)."""
    with open_clinic(postgres_url, tmp_path, arbitration_quorum=2) as clinic:
        _, arbitration = _arbitrated(clinic)
        first = _vote(clinic, "arthur", arbitration, choice="A")
        assert "result=waiting" in first.headers["location"]
        second = _vote(clinic, "sonia", arbitration, choice="B")
        assert "result=escalated" in second.headers["location"]
        senior, _ = clinic.login("sonia")
        settling = senior.get(f"/arbitration/{arbitration}").text  # the votes being settled
        assert 'id="votes"' in settling
        assert "adopt Read A" in settling and "adopt Read B" in settling
        final = _vote(clinic, "sonia", arbitration, choice="B", comment="B holds")
        assert final.status_code == 303 and "result=decided" in final.headers["location"]
        decided = senior.get(f"/arbitration/{arbitration}").text  # shown, not a form again
        assert 'id="decision"' in decided and "B holds" in decided and "locked" in decided
        assert 'id="decide-form"' not in decided and "Sign and decide" not in decided
        assert "Test Sonia" in decided.split('id="decision-signers"')[1].split("</p>")[0]
        with clinic.runtime.sessions() as session:
            decision = session.scalars(select(ArbitrationDecision)).one()
            sonia = session.scalars(select(Person).where(Person.username == "sonia")).one()
            assert decision.decided_by_pk == sonia.id and decision.signers == [sonia.id]


def test_a_quorum_the_panel_cannot_reach_escalates_at_once(
    postgres_url: str, tmp_path: Path
) -> None:
    with open_clinic(postgres_url, tmp_path, arbitration_quorum=5) as clinic:
        _, arbitration = _arbitrated(clinic)
        assert (
            "result=waiting" in _vote(clinic, "arthur", arbitration, choice="A").headers["location"]
        )
        agreed = _vote(clinic, "sonia", arbitration, choice="A")
        assert "result=escalated" in agreed.headers["location"]  # nobody left to vote
        final = _vote(clinic, "sonia", arbitration, choice="A")
        assert "result=decided" in final.headers["location"]
        with clinic.runtime.sessions() as session:
            decision = session.scalars(select(ArbitrationDecision)).one()
            ids = dict(session.execute(select(Person.username, Person.id)).all())
            assert decision.signers == [ids["arthur"], ids["sonia"]]  # both signed A


def test_a_case_nobody_can_decide_is_shown_and_an_admin_assigns_it(clinic: Clinic) -> None:
    case, arbitration = _arbitrated(clinic)
    _add(clinic, "sven", Role.SENIOR_ARBITER, site="SOUTH")
    with transaction(clinic.runtime.sessions) as session:
        session.scalars(select(Person).where(Person.username == "sonia")).one().active = False
        session.get_one(ArbitrationCase, arbitration).escalated = True
    admin, csrf = clinic.login("admin")
    board = admin.get("/dashboard").text
    assert f"/admin/arbitrations/{arbitration}/assign" in board
    sven, _ = clinic.login("sven")
    assert sven.get(f"/arbitration/{arbitration}").status_code == 404  # not his site, yet
    assigned = admin.post(
        f"/admin/arbitrations/{arbitration}/assign", data={"csrf_token": csrf, "senior": "sven"}
    )
    assert assigned.status_code == 303, assigned.text
    assert f"/admin/arbitrations/{arbitration}/assign" not in admin.get("/dashboard").text
    assert f'/arbitration/{arbitration}"' in sven.get("/arbitration").text
    page = sven.get(f"/arbitration/{arbitration}")
    assert page.status_code == 200
    image = page.text.split('data-id="')[1].split('"')[0]
    assert sven.get(f"/images/{image}.png").status_code == 200
    decided = _vote(clinic, "sven", arbitration, choice="A")
    assert "result=decided" in decided.headers["location"]
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(ArbitrationDecision)).one().case_pk == case


def test_the_panel_sees_and_decides_on_the_amended_read(clinic: Clinic) -> None:
    case, arbitration = _arbitrated(clinic)
    model = clinic.model(case)
    grader, csrf = clinic.login("grace")
    amended = {"R": {"codes": ["F.GLAU.GLAU"]}, "L": {"codes": []}}
    answer = grader.post(
        f"/cases/{case}/read", data=_read_form(csrf, amended, reason="missed the cupping")
    )
    assert answer.status_code == 303
    arbiter, _ = clinic.login("arthur")
    page = arbiter.get(f"/arbitration/{arbitration}").text
    assert "Amended: version 2" in page and "missed the cupping" in page
    assert 'id="read-history"' in page
    with clinic.runtime.sessions() as session:
        versions = session.scalars(select(CaseRead).order_by(CaseRead.version)).all()
        assert session.scalars(select(Triage)).one().read_pk == versions[1].id  # re-triaged
    grader_label = "A" if "read-A-amended" in page else "B"
    signed = _vote(clinic, "arthur", arbitration, choice=grader_label)
    assert "result=decided" in signed.headers["location"]
    with clinic.runtime.sessions() as session:
        decision = session.scalars(select(ArbitrationDecision)).one()
        assert decision.basis is not None
        assert decision.basis["read"] == versions[1].id and decision.basis["read_version"] == 2
        assert decision.basis["predictions"]
        assert decision.eyes == {"R": ["F.GLAU", "F.GLAU.GLAU"], "L": []}
        assert decision.referral is True and model is not None


def test_an_amendment_that_now_disagrees_goes_to_the_panel(clinic: Clinic) -> None:
    case = clinic.case()
    model = clinic.model(case)
    if model.ungradable:
        pytest.skip("the model found a generated photograph ungradable")
    same = {eye: {"codes": [c for c in model.findings[eye] if c.count(".") == 2]} for eye in "RL"}
    grader, csrf = clinic.login("grace")
    assert grader.post(f"/cases/{case}/read", data=_read_form(csrf, same)).status_code == 303
    with clinic.runtime.sessions() as session:
        assert not session.scalars(select(Triage)).one().to_arbitration
    differs = _read_form(csrf, other_read(model), reason="looked again")
    assert grader.post(f"/cases/{case}/read", data=differs).status_code == 303
    with clinic.runtime.sessions() as session:
        triage = session.scalars(select(Triage)).one()
        arbitration = session.scalars(select(ArbitrationCase)).one()
        latest = session.scalars(select(CaseRead).order_by(CaseRead.id.desc())).first()
        assert triage.to_arbitration and triage.inclusion_probability == 1.0
        assert latest is not None and arbitration.read_pk == latest.id == triage.read_pk


def test_every_signer_is_a_verifying_observer(postgres_url: str, tmp_path: Path) -> None:
    with open_clinic(postgres_url, tmp_path, arbitration_quorum=2) as clinic:
        _add(clinic, "anna", Role.ARBITER)
        case, arbitration = _arbitrated(clinic)
        assert (
            "result=waiting" in _vote(clinic, "arthur", arbitration, choice="A").headers["location"]
        )
        assert (
            "result=decided" in _vote(clinic, "anna", arbitration, choice="A").headers["location"]
        )
        clinic.runtime.reports().build_case(case)
        with clinic.runtime.sessions() as session:
            report = session.scalars(select(Report).order_by(Report.id.desc())).first()
            assert report is not None and report.verified
            sr = dcmread(BytesIO(clinic.runtime.reports().reports.read(report.sha256)))
        names = [str(o.VerifyingObserverName) for o in sr.VerifyingObserverSequence]
        assert names == ["Arthur^Test", "Anna^Test"]


def test_the_case_keeps_the_models_referral_for_the_dashboard(clinic: Clinic) -> None:
    case = clinic.case()
    model = clinic.model(case)
    with clinic.runtime.sessions() as session:
        assert session.get_one(ScreeningCase, case).referral is model.referral
    admin, _ = clinic.login("admin")
    tile = admin.get("/dashboard").text.split("referred by the model")[0].rsplit('class="n">', 1)[1]
    assert tile.startswith("100%" if model.referral else "0%")


def test_the_dashboard_rates_count_the_last_thirty_days_only(clinic: Clinic) -> None:
    recent, old = clinic.case(), clinic.case()
    with transaction(clinic.runtime.sessions) as session:
        session.get_one(ScreeningCase, recent).referral = True
        aged = session.get_one(ScreeningCase, old)
        aged.referral, aged.opened_at = False, utcnow() - timedelta(days=31)
    admin, _ = clinic.login("admin")
    page = admin.get("/dashboard").text
    tile = page.split("referred by the model")[0].rsplit('class="n">', 1)[1]
    assert tile.startswith("100%")  # the 31-day-old visit no longer counts
    assert "referred by the model (last 30 days)" in page
