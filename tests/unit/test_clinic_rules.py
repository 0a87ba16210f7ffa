"""The rules of the human half, without a database: what a read implies, what counts as a
disagreement, the QC draw, Read A/B order, and Cohen's kappa."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sklearn.metrics import cohen_kappa_score

from services.clinic.dashboard import cohen_kappa
from services.clinic.grading import ReadError, derive, normalise
from services.clinic.panel import model_first
from services.clinic.triage import Conflict, ModelRead, Rule, conflict, drawn_for_qc

FUNDUS_BOTH = {"R": ["fundus"], "L": ["fundus"]}


def test_a_finding_implies_its_parent_and_a_referral() -> None:
    eyes = normalise({"R": {"codes": ["F.VRD.MAC", "F.VRD.RVAS"]}, "L": {"codes": []}}, FUNDUS_BOTH)
    findings, referral = derive(eyes)
    assert findings == {"R": ["F.VRD", "F.VRD.MAC", "F.VRD.RVAS"], "L": []}
    assert referral
    assert derive(normalise({"R": {}, "L": {}}, FUNDUS_BOTH)) == ({"R": [], "L": []}, False)
    ungradable = normalise({"R": {"ungradable": "small pupil"}, "L": {}}, FUNDUS_BOTH)
    assert derive(ungradable)[1]  # an ungradable eye is referred


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"R": {}}, "no read for eye"),
        ({"R": {}, "L": {}, "U": {}}, "no photograph of eye"),
        ({"R": {"codes": ["F.VRD"]}, "L": {}}, "not a level-2 finding"),  # level 1 is derived
        ({"R": {"codes": ["F.NOR.NOR"]}, "L": {}}, "not a level-2 finding"),  # normal is a state
        ({"R": {"codes": ["A.CORN.KER"]}, "L": {}}, "not a level-2 finding"),
        ({"R": {"codes": ["F.VRD.MAC"], "ungradable": "blur"}, "L": {}}, "ungradable, yet"),
    ],
)
def test_reads_that_cannot_be_recorded(given: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ReadError, match=message):
        normalise(given, FUNDUS_BOTH)


def _read(findings: dict, referral: bool, ungradable: str | None = None):  # type: ignore[no-untyped-def,type-arg]
    eyes = {eye: {"codes": codes, "ungradable": ungradable} for eye, codes in findings.items()}
    return SimpleNamespace(findings=findings, referral=referral, eyes=eyes)


def test_disagreement_under_each_rule() -> None:
    model = ModelRead({"R": ["F.VRD", "F.VRD.MAC"], "L": []}, set(), True)
    same = _read({"R": ["F.VRD", "F.VRD.MAC"], "L": []}, True)
    sibling = _read({"R": ["F.VRD", "F.VRD.RVAS"], "L": []}, True)
    more = _read({"R": ["F.VRD", "F.VRD.MAC"], "L": ["F.GLAU", "F.GLAU.GLAU"]}, True)
    normal = _read({"R": [], "L": []}, False)
    assert conflict(model, same, Rule.LEVEL2) is None
    assert conflict(model, sibling, Rule.LEVEL2) == Conflict.MISSED_FINDING
    assert conflict(model, sibling, Rule.LEVEL1) is None  # same level-1 class
    assert conflict(model, more, Rule.LEVEL1) == Conflict.MISSED_FINDING
    assert conflict(model, more, Rule.REFERRAL) is None
    assert conflict(model, normal, Rule.REFERRAL) == Conflict.REFERRAL_FLIP
    fewer = ModelRead({"R": ["F.VRD", "F.VRD.MAC"], "L": ["F.LENS", "F.LENS.CAT"]}, set(), True)
    assert conflict(fewer, same, Rule.LEVEL2) == Conflict.EXTRA_FINDING
    blurred = _read({"R": [], "L": []}, True, ungradable="blur")
    assert conflict(model, blurred, Rule.REFERRAL) == Conflict.UNGRADABLE


def test_the_qc_draw_is_reproducible_and_takes_its_share() -> None:
    draws = [drawn_for_qc(7, case, 0.10) for case in range(20_000)]
    assert draws == [drawn_for_qc(7, case, 0.10) for case in range(20_000)]
    assert 0.09 < sum(draws) / len(draws) < 0.11
    assert draws != [drawn_for_qc(8, case, 0.10) for case in range(20_000)]
    assert not any(drawn_for_qc(7, case, 0.0) for case in range(1000))
    assert all(drawn_for_qc(7, case, 1.0) for case in range(1000))


def test_read_a_is_the_model_about_half_the_time() -> None:
    firsts = [model_first(arbitration, 1) for arbitration in range(4000)]
    assert 0.46 < sum(firsts) / len(firsts) < 0.54
    assert firsts == [model_first(arbitration, 1) for arbitration in range(4000)]


def test_cohen_kappa_agrees_with_scikit_learn() -> None:
    a = [True, True, False, False, True, False, True, True, False, False, True, False]
    b = [True, False, False, False, True, True, True, True, False, True, True, False]
    assert cohen_kappa(list(zip(a, b, strict=True))) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([]) is None
    assert cohen_kappa([(True, True), (True, True)]) is None  # no variation: undefined


def _run_panel(choices: tuple[str, ...], quorum: int) -> str:
    """One arbitration under ``escalation.after_vote``: the members vote ``choices`` in turn
    ("-": never votes; the sweeper escalates after the timeout); once escalated, the one
    senior takes the final decision, whether they voted before or not."""
    from services.clinic.escalation import Step, after_vote

    votes: list[str] = []
    step = Step.WAITING
    for position, choice in enumerate(choices):
        if choice == "-":
            continue
        votes.append(choice)
        left = len(choices) - position - 1  # eligible still: nobody knows who will abstain
        step = after_vote(votes.count(choice), len(votes), quorum, left)
        if step != Step.WAITING:
            break
    if step == Step.WAITING:
        step = Step.ESCALATED  # the sweeper, after the timeout
    if step == Step.ESCALATED:
        step = Step.DECIDED  # the senior's final act (panel.vote: open to a senior who voted)
    return step


def test_every_arbitration_can_be_decided_for_every_quorum_with_one_senior() -> None:
    """Every panel of up to three arbiters and one senior, every quorum, every order of
    voting, every way each member votes or abstains: the case reaches "decided"."""
    from itertools import product

    from services.clinic.escalation import Step, after_vote

    for members in range(1, 5):  # the senior and up to three arbiters, in any order
        for quorum in range(1, members + 3):
            for choices in product("AB-", repeat=members):
                assert _run_panel(choices, quorum) == Step.DECIDED, (choices, quorum)
    # The deadlock of issue 21: quorum 2, arbiter A, the only senior B: escalated, not stuck.
    assert after_vote(agreeing=1, voted=2, quorum=2, voters_left=0) == Step.ESCALATED
    # Agreement short of a quorum nobody is left to reach escalates at once.
    assert after_vote(agreeing=2, voted=2, quorum=3, voters_left=0) == Step.ESCALATED
    assert after_vote(agreeing=1, voted=1, quorum=2, voters_left=1) == Step.WAITING
    assert after_vote(agreeing=2, voted=2, quorum=2, voters_left=1) == Step.DECIDED


def test_the_panel_is_told_why_the_model_did_not_assess_a_photograph() -> None:
    from services.clinic.triage import _unfamiliar_reason
    from services.db.models import Prediction

    elsewhere = Prediction(provenance={"looks_like_route": "fundus", "guard_distance": 0.1})
    beyond = Prediction(provenance={"guard_distance": 0.7})
    assert _unfamiliar_reason(elsewhere).endswith("it looks like a fundus photograph")
    assert _unfamiliar_reason(beyond).endswith("unlike its training photographs")
