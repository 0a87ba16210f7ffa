"""The study's tables on the simulated study (``bench.study_simulation``), whose truth is
known: partial verification (the naive analysis is biased, the weighted one recovers the truth
within its interval), the STARD flow's sums, indeterminate results, the analysis set's codes,
the protocol and the iMRMC file."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.study_simulation import eye_records, simulate_visits, true_auc, true_sensitivity
from services.statistics.calibration import net_benefit
from services.study.eye import NOT_SENT, VERIFIED
from services.study.protocol import ProtocolError, load_protocol
from services.study.records import ReferenceRoute
from services.study.tables import (
    NAIVE,
    WEIGHTED,
    Options,
    accuracy_table,
    agreement,
    analysis_set,
    auc,
    calibration_rows,
    flow,
    has_reference,
    imrmc,
    imrmc_text,
    index_results,
    paired,
    referral,
    subgroups,
)
from services.study.tables.common import pvalue

OPTIONS = Options(replicates=200, seed=20211)


@pytest.fixture(scope="module")
def study():  # type: ignore[no-untyped-def]
    visits = simulate_visits(4670, 4670)  # the bench study
    return visits, eye_records(visits)


def _model_rows(rows, code):  # type: ignore[no-untyped-def]
    return {r["analysis"]: r for r in rows if r["reader"] == "model" and r["code"] == code}


@pytest.mark.parametrize("code", ["", "F.GLAU.GLAU", "F.LENS.CAT", "F.VRD.MAC", "F.VRD.RDET"])
def test_weighted_sensitivity_recovers_the_truth_and_naive_overstates_it(study, code) -> None:  # type: ignore[no-untyped-def]
    visits, records = study
    truth = true_sensitivity(visits, code)
    rows = _model_rows(accuracy_table(records, OPTIONS), code)
    weighted, naive = rows[WEIGHTED], rows[NAIVE]
    assert float(weighted["sensitivity_low"]) <= truth <= float(weighted["sensitivity_high"])
    assert float(naive["sensitivity"]) > truth + 0.02, (naive["sensitivity"], truth)
    if not code:  # the referral: so biased that the naive interval misses the truth
        assert float(naive["sensitivity_low"]) > truth


def test_weighted_auc_recovers_the_truth_and_naive_overstates_it(study) -> None:  # type: ignore[no-untyped-def]
    visits, records = study
    truth = true_auc(visits)
    rows = {r["analysis"]: r for r in auc(records, OPTIONS) if r["code"] == ""}
    assert float(rows[WEIGHTED]["auc_low"]) <= truth <= float(rows[WEIGHTED]["auc_high"])
    assert float(rows[NAIVE]["auc_low"]) > truth
    assert (
        rows[NAIVE]["delong_low_eyes_independent"]
        and not rows[WEIGHTED]["delong_low_eyes_independent"]
    )


def test_every_table_gives_both_analyses_weighted_first(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    protocol = load_protocol()
    summary, bins, curve = calibration_rows(records)
    for name, rows in (
        ("accuracy", accuracy_table(records, OPTIONS)),
        ("auc", auc(records, OPTIONS)),
        ("referral", referral(records, OPTIONS)),
        ("paired", paired(records, OPTIONS)),
        ("subgroups", subgroups(records, protocol, OPTIONS)),
        ("calibration", summary),
        ("reliability", bins),
        ("decision_curve", curve),
    ):
        analyses = [r["analysis"] for r in rows]
        assert set(analyses) == {WEIGHTED, NAIVE}, name
        assert analyses.index(WEIGHTED) < analyses.index(NAIVE), name


def test_clustered_intervals_are_wider_than_independent_ones(study) -> None:  # type: ignore[no-untyped-def]
    """Two correlated eyes per patient: the patient bootstrap is wider than Wilson's interval
    for the naive referral sensitivity, which treats the eyes as independent."""
    from services.statistics.accuracy import Interval, TwoByTwo

    _, records = study
    row = _model_rows(accuracy_table(records, OPTIONS), "")[NAIVE]
    wilson = TwoByTwo(row["tp"], row["fp"], row["fn"], row["tn"]).measures(Interval.WILSON)
    independent = wilson["sensitivity"].high - wilson["sensitivity"].low
    clustered = float(row["sensitivity_high"]) - float(row["sensitivity_low"])
    assert clustered > 1.1 * independent
    right = {
        r.case_key: bool(r.reference) for r in records if r.eye == "R" and r.reference is not None
    }
    left = {
        r.case_key: bool(r.reference) for r in records if r.eye == "L" and r.reference is not None
    }
    both = sorted(set(right) & set(left))
    correlation = np.corrcoef([right[k] for k in both], [left[k] for k in both])[0, 1]
    assert correlation > 0.3  # the simulation's eyes are correlated


def _flow_sums(rows) -> None:  # type: ignore[no-untyped-def]
    """Within a unit each box is the sum of its children; across units the chain holds:
    the visits are those of the patients who received the index test, the eyes two per
    visit."""
    by_node = {r["node"]: r for r in rows}
    children: dict[str, int] = {}
    for row in rows:
        parent = by_node.get(row["parent"])
        if parent is not None and parent["unit"] == row["unit"]:
            children[row["parent"]] = children.get(row["parent"], 0) + row["count"]
    for row in rows:
        if row["node"] in children:
            assert children[row["node"]] == row["count"], row
    assert [r["node"] for r in rows if not r["parent"]] == ["P"]
    assert by_node["V"]["parent"] == rows[[r["unit"] for r in rows].index("visit") - 1]["node"]
    assert by_node["E"]["parent"] == "V" and by_node["E"]["count"] == 2 * by_node["V"]["count"]


def test_flow_is_one_tree_from_eligible_patients_to_eyes(study) -> None:  # type: ignore[no-untyped-def]
    from services.study.enrolment import Enrolment

    visits, records = study
    rows = flow(records)
    assert "visits_total" not in rows[0]
    _flow_sums(rows)
    by_node = {r["node"]: r for r in rows}
    assert by_node["P"]["count"] == by_node["V"]["count"] == len(visits)
    assert by_node["E.2"]["count"] == len(records)
    enrolled = Enrolment(
        expected=4800, walk_in=20, not_photographed=140, no_index_result=10, received=4670
    )
    rows = flow(records, enrolled)
    _flow_sums(rows)
    by_node = {r["node"]: r for r in rows}
    assert by_node["P"]["count"] == 4820 and by_node["P.3"]["count"] == len(visits)
    assert by_node["V"]["parent"] == "P.3"
    assert {r["label"] for r in rows if r["stage"] == "excluded"} >= {
        "excluded: expected, not photographed (no study arrived)"
    }
    eyes = [r for r in rows if r["unit"] == "eye"]
    labels = {r["label"] for r in eyes}
    assert {"positive", "negative", "indeterminate (ungradable)"} <= labels
    assert {"panel", ReferenceRoute.PANEL_PENDING.value} <= labels
    # the reference standard is the panel's, as in the primary (weighted) analysis: only the
    # verified eyes received it; the concordant eyes not drawn for QC did not, by design
    received = sum(r["count"] for r in eyes if r["label"] == "reference standard received")
    assert received == sum(1 for r in records if r.reference_route in VERIFIED) > 0
    by_node = {r["node"]: r for r in eyes}
    by_design = [r for r in eyes if r["label"].startswith("not verified by the panel (by design")]
    for box in by_design:
        assert by_node[box["parent"]]["label"] == "reference standard not received"
    concordant = [
        r
        for r in by_design
        if r["label"] == "not verified by the panel (by design: concordant, not drawn for QC)"
    ]
    assert sum(r["count"] for r in concordant) == sum(
        1 for r in records if r.reference_route == ReferenceRoute.CONCORDANT
    )
    assert sum(r["count"] for r in by_design) == sum(
        1 for r in records if r.reference_route in NOT_SENT
    )


def test_never_verifiable_eyes_have_no_reference_and_no_weight(study) -> None:  # type: ignore[no-untyped-def]
    """The fellow eye of a case a grader could not fully grade goes to the outcome queue with
    it, never to the panel: concordant or not it is not verified, carries verification
    probability 0, and the flow counts it under 'reference standard not received' with its
    reason (it used to count as received, its triage's queue probability 1 as if verified)."""
    from services.study.tables import WEIGHTED, truth_weight

    _, records = study
    fellows = [
        r for r in records if r.reference_route == ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT
    ]
    assert len(fellows) > 100
    for record in fellows:
        assert record.triaged_read is not None and record.reference is None
        assert record.inclusion_probability == 0.0 and record.verification_probability is None
        assert truth_weight(record, WEIGHTED) is None and truth_weight(record, NAIVE) is None
    pending = [r for r in records if r.reference_route == ReferenceRoute.PANEL_PENDING]
    assert pending and all(r.verification_probability for r in pending)  # verifiable, not yet
    rows = [r for r in flow(records) if r["unit"] == "eye"]
    by_node = {r["node"]: r for r in rows}
    reasons = [r for r in rows if r["label"] == ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT]
    for reason in reasons:  # one box under each index-test result
        assert by_node[reason["parent"]]["label"] == "reference standard not received"
    assert sum(r["count"] for r in reasons) == len(fellows) == 228  # the bench study's
    written = {
        row["reference_route"]: row
        for row in analysis_set(records)
        if row["reference_route"] == ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT
    }
    row = next(iter(written.values()))
    assert (row["inclusion_probability"], row["verifiable"], row["weight"]) == ("0.0", "0", "0")


def test_indeterminate_results_are_counted(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    rows = {r["reader"]: r for r in index_results(records)}
    assert rows["model"]["indeterminate"] == sum(not r.model_gradable for r in records) > 0
    for reader, row in rows.items():
        assert row["positive"] + row["negative"] + row["indeterminate"] == row["eyes"], reader
    assert all(row["indeterminate"] > 0 for row in rows.values())


def test_intention_to_diagnose_counts_each_graders_ungradable_eyes(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    rows = referral(records, OPTIONS)
    counted = {}
    for reader in sorted({r["reader"] for r in rows}):
        chosen = {
            r["ungradable"]: r
            for r in rows
            if r["reader"] == reader and r["unit"] == "eye" and r["analysis"] == NAIVE
        }
        ungradable = sum(
            1
            for r in records
            if has_reference(r)
            and (
                not r.model_gradable
                if reader == "model"
                else reader in r.reads and r.reads[reader] is None
            )
        )
        counted[reader] = ungradable
        itd, excluded = chosen["ungradable = referral"], chosen["ungradable excluded"]
        assert itd["n"] - excluded["n"] == ungradable, reader
    assert counted.pop("model") > 0 and sum(counted.values()) > 0


def test_a_graders_ungradable_eye_leaves_the_fellow_eye_its_own_read(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    by_case: dict[str, list] = {}  # type: ignore[type-arg]
    for record in records:
        by_case.setdefault(record.case_key, []).append(record)
    kept = [
        eyes
        for eyes in by_case.values()
        if {r.reference_route for r in eyes}
        == {ReferenceRoute.UNGRADABLE, ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT}
    ]
    assert kept  # the simulation has such visits: the gradable eye keeps its read and result
    for eyes in kept:
        fellow = next(r for r in eyes if r.triaged_read is not None)
        assert fellow.model_gradable and fellow.reference is None


def test_analysis_set_tells_healthy_from_missing_at_full_precision(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    rows = analysis_set(records)
    ungradable = next(r for r, rec in zip(rows, records, strict=True) if not rec.model_gradable)
    assert ungradable["disease_risk"] == "NA" and ungradable["p_F.GLAU"] == "NA"
    assert ungradable["model_result"] == "UNGRADABLE"
    references = {r["reference"] for r in rows}
    assert {"NONE", "NA"} <= references
    assert "" not in references
    blinded = {r["grader_blinded"] for r in rows}
    assert blinded == {"0", "1", "NA"}
    reads = {
        v for r in rows for k, v in r.items() if k.startswith("grader_") and k.endswith("_read")
    }
    assert {"NONE", "NA", "UNGRADABLE"} <= reads
    # the decision curve is reproducible from the file: the probabilities are exact
    text = io.StringIO()
    writer = csv.DictWriter(text, list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    back = list(csv.DictReader(io.StringIO(text.getvalue())))
    for row, record in zip(back, records, strict=True):
        if record.model_gradable:
            assert float(row["p_F.LENS.CAT"]) == record.probabilities["F.LENS.CAT"]
    _, _, curve = calibration_rows(records)
    naive = next(r for r in curve if r["analysis"] == NAIVE and r["threshold"] == "0.15")
    chosen = [
        (float(row["disease_risk"]), row["reference"] != "NONE")
        for row in back
        if row["reference"] != "NA" and row["disease_risk"] != "NA"
    ]
    p, y = np.array([c[0] for c in chosen]), np.array([c[1] for c in chosen])
    assert f"{net_benefit(p, y, 0.15):.4f}" == naive["model_risk"]


def test_agreement_has_its_own_columns_and_p_values_print_below_1e4(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    assert pvalue(3e-7) == "<0.0001" and pvalue(0.01234) == "0.0123" and pvalue(None) == ""
    rows = paired(records, OPTIONS)
    assert all("kappa" not in r["comparison"] for r in rows)
    assert any(r["mcnemar_exact_p_eyes_independent"] == "<0.0001" for r in rows)
    statistics = {r["statistic"]: r for r in agreement(records, OPTIONS)}
    assert set(statistics) == {"Cohen's kappa", "Fleiss' kappa", "Gwet's AC1"}
    for row in statistics.values():
        assert float(row["low"]) <= float(row["estimate"]) <= float(row["high"])
    cohen = statistics["Cohen's kappa"]  # its eyes-independent interval says so in its name
    assert "fce_low" not in cohen and "fce_high" not in cohen
    low, high = cohen["fce_low_eyes_independent"], cohen["fce_high_eyes_independent"]
    assert float(low) <= float(cohen["estimate"]) <= float(high)


def test_imrmc_file_is_what_imrmc_reads(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    text = imrmc_text(imrmc(records[:400]))
    header, data = text.split("BEGIN DATA:\n")
    assert "NOT fully crossed" in header
    rows = [line.split(",") for line in data.splitlines()]
    truth = [r for r in rows if r[0] == "truth"]
    assert truth and all(r[2] == "truth" and r[3] in ("0", "1") for r in truth)
    scores = {float(r[3]) for r in rows if r[0] == "model"}
    assert max(scores) > 1  # on a 0-100 scale, not 0/1
    assert len(scores) > 50


def test_protocol_names_the_subgroups_and_the_endpoints(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    default = load_protocol()
    assert len(default.sha256) == 64 and default.prespecified
    custom = tmp_path / "protocol.toml"
    custom.write_text(
        (Path(default.source if False else "services/study/protocol.toml"))
        .read_text()
        .replace(
            'prespecified = ["site", "model_version", "age_band", "sex"]', 'prespecified = ["sex"]'
        )
        .replace('exploratory = ["camera"]', "exploratory = []")
    )
    protocol = load_protocol(custom)
    assert protocol.sha256 != default.sha256 and protocol.prespecified == ("sex",)
    rows = subgroups(records, protocol, OPTIONS)
    assert {r["subgroup"] for r in rows} == {"sex"} and {r["protocol"] for r in rows} == {
        "prespecified"
    }
    from services.study.tables import endpoints, sample_size

    accuracy_rows = accuracy_table(records, OPTIONS)
    referral_rows = referral(records, OPTIONS)
    ends = endpoints(protocol, accuracy_rows, auc(records, OPTIONS), referral_rows)
    primary = next(r for r in ends if r["endpoint"] == "referral sensitivity")
    assert primary["analysis"] == WEIGHTED and primary["ungradable"] == "referral"
    itd = next(
        r
        for r in referral_rows
        if r["reader"] == "model"
        and r["unit"] == "eye"
        and r["ungradable"] == "ungradable = referral"
        and r["analysis"] == WEIGHTED
    )
    assert (primary["estimate"], primary["low"]) == (itd["sensitivity"], itd["sensitivity_low"])
    assert primary["result"] == ("met" if float(primary["low"]) > 0.85 else "not met")
    missing = endpoints(protocol, accuracy_rows, [], [])
    assert {r["result"] for r in missing if r["measure"] != "specificity"} == {"not estimable"}
    size = sample_size(protocol, accuracy_rows, records)[0]
    assert size["units_with_condition_needed"] > 0 and size["units_needed_observed"]
    broken = tmp_path / "broken.toml"
    broken.write_text('[[endpoints]]\nname = "x"\nmeasure = "sensitivity"\n')
    with pytest.raises(ProtocolError, match="goal"):
        load_protocol(broken)


def test_protocol_fixes_the_confirmatory_interval_and_the_verdict_says_if_overridden(
    study, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from services.study.tables import endpoints, verdict

    _, records = study
    protocol = load_protocol()
    assert (protocol.interval, protocol.replicates, protocol.seed) == (
        "cluster bootstrap percentile",
        500,
        20211,
    )
    text = Path("services/study/protocol.toml").read_text()
    custom = tmp_path / "custom.toml"
    custom.write_text(text.replace("replicates = 500", "replicates = 200"))
    registered = load_protocol(custom)
    assert registered.replicates == 200 and registered.overridden(200, 20211) == []
    assert registered.overridden(50, 7) == [
        "replicates 50 (protocol: 200)",
        "seed 7 (protocol: 20211)",
    ]
    for wrong in ('interval = "wald"', "replicates = 10", 'seed = "x"'):
        key = wrong.split(" =")[0]
        bad = tmp_path / "bad.toml"
        bad.write_text(
            "\n".join(wrong if line.startswith(f"{key} =") else line for line in text.splitlines())
        )
        with pytest.raises(ProtocolError, match=r"\[analysis\]"):
            load_protocol(bad)
    rows = endpoints(
        registered,
        accuracy_table(records, OPTIONS),
        auc(records, OPTIONS),
        referral(records, OPTIONS),
        records,
    )
    primary = [r for r in rows if r["kind"] == "primary"]
    as_run = verdict(registered, rows, OPTIONS)[0]  # OPTIONS: 200 replicates, seed 20211
    met = all(r["result"] == "met" for r in primary)
    assert as_run["all_co_primary_endpoints_met"] == ("yes" if met else "no")
    assert as_run["co_primary_endpoints"] == len(primary) == 2
    assert as_run["protocol"] == "as registered"
    assert as_run["interval"] == "cluster bootstrap percentile (200 replicates, seed 20211)"
    other = verdict(registered, rows, replace(OPTIONS, seed=1))[0]
    assert other["protocol"] == "overridden: seed 1 (protocol: 20211)"
    failing = [dict(primary[0], result="not met"), primary[1]]
    assert verdict(registered, failing, OPTIONS)[0]["all_co_primary_endpoints_met"] == "no"


def test_endpoints_give_the_indeterminate_eyes_and_the_population_they_describe(study) -> None:  # type: ignore[no-untyped-def]
    """Beside each co-primary endpoint: the model's indeterminate (ungradable) eyes, their
    share, how many of them could never be verified (the intention-to-diagnose row cannot
    count those as referred), and that the weighted estimate describes the verifiable eyes."""
    from services.study.tables import endpoints

    _, records = study
    rows = endpoints(
        load_protocol(),
        accuracy_table(records, OPTIONS),
        auc(records, OPTIONS),
        referral(records, OPTIONS),
        records,
    )
    ungradable = [r for r in records if not r.model_gradable]
    never = sum(r.verification_probability is None for r in ungradable)
    outside = sum(r.verification_probability is None for r in records)
    assert 0 < never < len(ungradable)
    for row in (r for r in rows if r["kind"] == "primary"):
        assert row["indeterminate_eyes"] == len(ungradable)
        assert row["indeterminate_share"] == f"{len(ungradable) / len(records):.4f}"
        assert row["indeterminate_never_verifiable"] == never
        assert row["describes"].startswith(
            f"the verifiable eyes ({len(records) - outside} of {len(records)})"
        )


def _referral_row(rows, handling: str):  # type: ignore[no-untyped-def]
    return next(
        r
        for r in rows
        if r["reader"] == "model"
        and r["unit"] == "eye"
        and r["ungradable"] == handling
        and r["analysis"] == WEIGHTED
    )


def test_co_primary_endpoints_share_the_protocols_handling_of_ungradable_eyes(
    study, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Sensitivity and specificity answer the same question: both count an ungradable eye as
    a referral (intention to diagnose, the protocol's one handling), the complete-case
    variant beside each as a secondary row; the protocol file names the handling once."""
    from services.study.tables import endpoints

    _, records = study
    referral_rows = referral(records, OPTIONS)
    accuracy_rows = accuracy_table(records, OPTIONS)
    auc_rows = auc(records, OPTIONS)
    text = Path("services/study/protocol.toml").read_text()
    for handling, other in (("referral", "excluded"), ("excluded", "referral")):
        path = tmp_path / f"{handling}.toml"
        path.write_text(text.replace('ungradable = "referral"', f'ungradable = "{handling}"'))
        protocol = load_protocol(path)
        assert protocol.ungradable == handling
        rows = endpoints(protocol, accuracy_rows, auc_rows, referral_rows)
        for measure in ("sensitivity", "specificity"):
            stated, variant = (
                r for r in rows if r["endpoint"] == f"referral {measure}"
            )  # the protocol's row first
            assert (stated["kind"], stated["ungradable"]) == ("primary", handling)
            assert variant["kind"].startswith("secondary") and variant["ungradable"] == other
            for row, used in ((stated, handling), (variant, other)):
                label = "ungradable = referral" if used == "referral" else "ungradable excluded"
                assert row["estimate"] == _referral_row(referral_rows, label)[measure]
        auc_row = next(r for r in rows if r["measure"] == "auc")
        assert auc_row["ungradable"] == "not applicable"
    path = tmp_path / "per_endpoint.toml"
    path.write_text(
        text.replace('bound = "lower"\n', 'bound = "lower"\nungradable = "excluded"\n', 1)
    )
    with pytest.raises(ProtocolError, match="once at the top"):
        load_protocol(path)


def test_sample_size_applies_the_design_effect_of_two_eyes(study) -> None:  # type: ignore[no-untyped-def]
    """The simulation's eyes are correlated within patients: the justification multiplies
    the independent-unit need by 1 + (m - 1) rho, rho as R's ANOVA estimator gives it."""
    from services.study.tables import sample_size

    _, records = study
    row = sample_size(load_protocol(), accuracy_table(records, OPTIONS), records)[0]
    m, rho = float(row["eyes_per_patient"]), float(row["intra_patient_correlation"])
    assert 1 < m <= 2 and 0.05 < rho < 1
    assert float(row["design_effect_clustering"]) == pytest.approx(1 + (m - 1) * rho, abs=1e-4)
    # Kish's design effect of unequal weights, 1 + CV^2, over the weights of the verified
    # diseased eyes (the primary endpoint is the weighted referral sensitivity), on top
    weights = np.array(
        [
            1 / r.verification_probability
            for r in records
            if r.reference_route in VERIFIED and r.reference and r.verification_probability
        ]
    )
    kish = 1 + weights.var() / weights.mean() ** 2
    assert kish > 1.05  # the QC stratum's eyes weigh ten times the discordant ones
    assert float(row["design_effect_unequal_weights"]) == pytest.approx(kish, abs=1e-4)
    effect = (1 + (m - 1) * rho) * kish
    assert float(row["design_effect"]) == pytest.approx(effect, abs=1e-3)
    needed = row["units_with_condition_needed_independent"] * effect  # rounded up, from m, rho
    assert row["units_with_condition_needed"] == pytest.approx(math.ceil(needed), abs=1)
    assert "estimated on the naive truth" in row["note"] and "Kish" in row["note"]
    assert row["units_with_condition_needed"] > row["units_with_condition_needed_independent"]
    # the same estimator by hand on the groups: between and within mean squares
    groups: dict[str, list[float]] = {}
    for r in records:
        if has_reference(r) and r.model_gradable and r.reference:
            groups.setdefault(r.patient_key, []).append(float(r.model_referral))
    values = [np.array(g) for g in groups.values()]
    n = np.array([len(v) for v in values], dtype=float)
    grand = np.concatenate(values).mean()
    msb = sum(len(v) * (v.mean() - grand) ** 2 for v in values) / (len(values) - 1)
    msw = sum(((v - v.mean()) ** 2).sum() for v in values) / (n.sum() - len(values))
    n0 = (n.sum() - (n**2).sum() / n.sum()) / (len(values) - 1)
    assert rho == pytest.approx((msb - msw) / (msb + (n0 - 1) * msw), abs=1e-4)


def test_analysis_set_leaves_an_ungradable_eyes_referral_missing(study) -> None:  # type: ignore[no-untyped-def]
    _, records = study
    rows = analysis_set(records)
    for row, record in zip(rows, records, strict=True):
        if not record.model_gradable:
            assert row["model_referral"] == "NA" and row["model_result"] == "UNGRADABLE"
        else:
            assert row["model_referral"] == int(record.model_referral)


def test_target_conditions_give_each_share_beside_its_own_counts(study) -> None:  # type: ignore[no-untyped-def]
    from services.study.tables import target_conditions

    _, records = study
    rows = target_conditions(records)
    for row in rows:
        if not row["eyes"]:
            continue
        assert float(row["share_of_eyes"]) == pytest.approx(
            row["eyes_with_condition"] / row["eyes"], abs=1e-4
        )
        assert float(row["share_weighted"]) == pytest.approx(
            float(row["eyes_with_condition_weighted"]) / float(row["eyes_weighted"]), abs=1e-3
        )
    referral = {r["analysis"]: r for r in rows if r["level"] == "referral"}
    # the verified eyes stand for every eye that could have been verified
    from services.study.verification import verifiable

    population = sum(verifiable(r) for r in records)
    assert float(referral[WEIGHTED]["eyes_weighted"]) == pytest.approx(population, rel=0.01)
    assert referral[WEIGHTED]["eyes"] < population / 2
    assert referral[NAIVE]["share_weighted"] == referral[NAIVE]["share_of_eyes"]


def test_calibration_intervals_match_refitting_every_bootstrap_replicate(study) -> None:  # type: ignore[no-untyped-def]
    """The one-step bootstrap of the calibration intercept and slope gives the intervals that
    refitting the logistic models on every replicate (statsmodels, the same patients drawn)
    gives, to a fraction of their width; the Brier score's interval exactly."""
    from services.statistics.bootstrap import _draws, percentile_interval
    from services.statistics.calibration import calibration
    from services.study.tables.common import verification
    from services.study.tables.discrimination import auc_targets, scored_eyes

    _, records = study
    options = Options(replicates=120, seed=3)
    row = next(
        r
        for r in calibration_rows(records, options)[0]
        if r["code"] == "" and r["analysis"] == WEIGHTED
    )
    _level, route, code, _name, score = auc_targets(records)[0]
    eyes, p, y, w = scored_eyes(records, route, code, score, verification(records, WEIGHTED))
    index, counts = _draws([r.patient_key for r in records], options.replicates, options.seed)
    position = {id(r): i for i, r in enumerate(records)}
    drawn = counts[:, index[[position[id(r)] for r in eyes]]]
    refits = [calibration(p, y, w * drawn[k]) for k in range(options.replicates)]
    for measure in ("brier", "intercept", "slope"):
        low, high = percentile_interval(np.array([getattr(f, measure) for f in refits]))
        width = high - low
        tolerance = 1e-4 if measure == "brier" else 0.2 * width
        assert float(row[f"{measure}_low"]) == pytest.approx(low, abs=tolerance), measure
        assert float(row[f"{measure}_high"]) == pytest.approx(high, abs=tolerance), measure


def test_weighted_estimates_need_the_verification_probability(study) -> None:  # type: ignore[no-untyped-def]
    """A QC-verified eye weighs 1 / the share of its stratum's verifiable cases the panel
    decided (concordant or QC-drawn, decided or pending); a verified eye without an estimated
    probability has no weight: left out of the weighted analysis, not counted with weight 1."""
    _, records = study
    verified = next(r for r in records if r.reference_route == ReferenceRoute.PANEL_QC)
    from services.study.tables import truth_weight

    stratum = {
        r.case_key
        for r in records
        if r.inclusion_probability == 0.1
        and r.reference_route
        in (ReferenceRoute.CONCORDANT, ReferenceRoute.PANEL_QC, ReferenceRoute.PANEL_PENDING)
    }
    decided = {r.case_key for r in records if r.reference_route == ReferenceRoute.PANEL_QC}
    weight = truth_weight(verified, WEIGHTED)
    assert weight is not None and weight[0] == verified.reference
    assert weight[1] == pytest.approx(len(stratum) / len(decided), rel=1e-12)
    assert truth_weight(replace(verified, verification_probability=None), WEIGHTED) is None
    assert math.isclose(truth_weight(verified, NAIVE)[1], 1.0)  # type: ignore[index]


def test_an_eye_the_model_could_not_grade_is_never_concordant(study) -> None:  # type: ignore[no-untyped-def]
    """A case the triage kept from the panel may hold an eye the model could not grade (the
    grader's read of it agreed with nothing): it has its own route, stays in the verifiable
    population (its case could have been drawn for QC) and its read is the naive truth."""
    from datetime import UTC, datetime

    from services.db.models import CaseRead, Triage
    from services.study.records import _reference
    from services.study.tables import truth_weight

    _, records = study
    assert not [
        r
        for r in records
        if r.reference_route == ReferenceRoute.CONCORDANT and not r.model_gradable
    ]
    kept = [r for r in records if r.reference_route == ReferenceRoute.MODEL_UNGRADABLE_NOT_SENT]
    assert len(kept) == 1  # the bench study's one
    assert kept[0].verification_probability and truth_weight(kept[0], NAIVE) is not None
    assert truth_weight(kept[0], WEIGHTED) is None
    # the database reader routes it the same way
    read = CaseRead(id=1, eyes={"R": {}}, findings={"R": []}, blinded=None)
    read.created_at = datetime(2021, 1, 1, tzinfo=UTC)
    triage = Triage(read_pk=1, to_arbitration=False, inclusion_probability=0.1, conflict="")
    record = replace(kept[0], reference=None, reference_route=ReferenceRoute.NOT_READ)
    _reference(record, "R", triage, None, None, {1: read})
    assert record.reference_route == ReferenceRoute.MODEL_UNGRADABLE_NOT_SENT
    assert record.reference == set()
    record.model_gradable = True
    _reference(record, "R", triage, None, None, {1: read})
    assert record.reference_route == ReferenceRoute.CONCORDANT
