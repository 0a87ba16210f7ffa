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
