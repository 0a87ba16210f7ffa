"""The study statistics against hand-computed fixtures, published values, scikit-learn,
statsmodels and a simulated study."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from services.statistics.accuracy import Interval, TwoByTwo, proportion
from services.statistics.bootstrap import cluster_bootstrap
from services.statistics.calibration import calibration, net_benefit
from services.statistics.paired import (
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    mcnemar_exact,
    newcombe_paired,
)
from services.statistics.roc import delong
from services.statistics.verification import Case, naive, weighted


def test_hand_computed_fixtures() -> None:
    w = proportion(45, 50, Interval.WILSON)
    assert (round(w.low, 3), round(w.high, 3)) == (0.786, 0.957)
    assert round(mcnemar_exact(30, 9, 3, 8), 3) == 0.146
    k = cohen_kappa([[40, 5], [7, 48]])
    assert (round(k.kappa, 3), round(k.low, 3), round(k.high, 3)) == (0.759, 0.631, 0.887)


def test_intervals_agree_with_statsmodels_when_the_method_is_named() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        k = int(rng.integers(0, n + 1))
        for method, theirs in ((Interval.WILSON, "wilson"), (Interval.CLOPPER_PEARSON, "beta")):
            ours = proportion(k, n, method)
            low, high = proportion_confint(k, n, alpha=0.05, method=theirs)
            assert ours.low == pytest.approx(low, abs=1e-9)
            assert ours.high == pytest.approx(high, abs=1e-9)


def test_likelihood_ratios_by_hand() -> None:
    table = TwoByTwo(tp=90, fp=20, fn=10, tn=80)  # sens 0.9, spec 0.8
    measures = table.measures(Interval.WILSON)
    assert measures["lr_positive"].estimate == pytest.approx(4.5)
    assert measures["lr_negative"].estimate == pytest.approx(0.125)
    se = np.sqrt(1 / 90 - 1 / 100 + 1 / 20 - 1 / 100)
    assert measures["lr_positive"].low == pytest.approx(4.5 * np.exp(-1.959964 * se), rel=1e-6)


def test_delong_matches_scikit_learn_auc_and_a_bootstrap() -> None:
    rng = np.random.default_rng(11)
    truth = rng.random(400) < 0.3
    scores = np.where(truth, rng.normal(1.0, 1, 400), rng.normal(0, 1, 400)).round(1)  # ties
    result = delong(scores, truth)
    assert result.auc == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)
    boots = []
    for _ in range(2000):
        i = rng.integers(0, 400, 400)
        if truth[i].any() and not truth[i].all():
            boots.append(roc_auc_score(truth[i], scores[i]))
    assert result.se == pytest.approx(np.std(boots), rel=0.1)


def test_kappas_agree_with_scikit_learn_and_statsmodels() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 3, 300)
    b = np.where(rng.random(300) < 0.7, a, rng.integers(0, 3, 300))
    table = np.zeros((3, 3), dtype=int)
    for x, y in zip(a, b, strict=True):
        table[x, y] += 1
    assert cohen_kappa(table).kappa == pytest.approx(cohen_kappa_score(a, b))
    ratings = np.stack([np.bincount([x, y], minlength=3) for x, y in zip(a, b, strict=True)])
    assert -1 <= fleiss_kappa(ratings) <= 1
    # Gwet's AC1 by hand: two raters, 118 agree "normal", 7 disagree, none agree "disease".
    # Pa = 118/125; pi = (243/250, 7/250); Pe = 2 * pi0 * pi1; AC1 = (Pa - Pe) / (1 - Pe).
    two = np.array([[2, 0]] * 118 + [[1, 1]] * 7)
    pa, pi0 = 118 / 125, 243 / 250
    pe = 2 * pi0 * (1 - pi0)
    assert gwet_ac1(two) == pytest.approx((pa - pe) / (1 - pe))
    assert fleiss_kappa(two) < 0 < gwet_ac1(two)  # the kappa paradox AC1 avoids


def test_newcombe_paired_difference() -> None:
    d = newcombe_paired(both=12, only_first=9, only_second=2, neither=1)
    assert d.estimate == pytest.approx(7 / 24)
    assert d.low < d.estimate < d.high and d.low >= -1 and d.high <= 1
    # with no discordant pairs the difference is 0 and the interval straddles it
    zero = newcombe_paired(both=30, only_first=0, only_second=0, neither=20)
    assert zero.estimate == 0 and zero.low < 0 < zero.high
    # large samples: close to the Wald interval of the paired difference
    big = newcombe_paired(both=4000, only_first=900, only_second=600, neither=4500)
    n = 10_000
    wald = 1.959964 * np.sqrt((900 + 600) / n - ((900 - 600) / n) ** 2) / np.sqrt(n)
    assert big.high - big.estimate == pytest.approx(wald, rel=0.05)


def test_the_weighted_estimate_recovers_the_truth_where_the_naive_one_is_biased() -> None:
    rng = np.random.default_rng(2021)
    cases = []
    for patient in range(20_000):
        diseased = rng.random() < 0.2
        model = rng.random() < (0.80 if diseased else 0.10)  # true sens 0.80, spec 0.90
        grader = rng.random() < (0.85 if diseased else 0.05)
        concordant = model == grader
        probability = 0.10 if concordant else 1.0
        verified = rng.random() < probability
        cases.append(Case(model, diseased if verified else None, probability, grader, str(patient)))
    naive_sens, _ = naive(cases)
    sens, spec = weighted(cases)
    assert naive_sens - 0.80 > 0.015  # discrepant analysis flatters the model
    assert sens == pytest.approx(0.80, abs=0.02) and spec == pytest.approx(0.90, abs=0.01)
    [(low, high), _] = cluster_bootstrap(cases, lambda c: c.cluster, weighted, 200, seed=1)
    assert low < 0.80 < high


def test_calibration_of_calibrated_risks_and_net_benefit() -> None:
    rng = np.random.default_rng(9)
    p = rng.random(5000)
    y = rng.random(5000) < p
    fitted = calibration(p, y)
    assert fitted.slope == pytest.approx(1, abs=0.15) and fitted.intercept == pytest.approx(
        0, abs=0.1
    )
    assert fitted.brier == pytest.approx(np.mean((p - y) ** 2))
    everyone = net_benefit(np.ones(5000), y, 0.2)
    assert everyone == pytest.approx(y.mean() - (1 - y.mean()) * 0.25)


def test_vectorised_bootstraps_agree_with_the_plain_one() -> None:
    from services.statistics.bootstrap import bootstrap_auc, bootstrap_sums, percentile_interval

    rng = np.random.default_rng(4)
    clusters = [str(i // 2) for i in range(600)]  # two eyes a patient
    truth = rng.random(600) < 0.3
    scores = np.where(truth, rng.normal(1, 1, 600), rng.normal(0, 1, 600)).round(1)
    items = list(zip(scores, truth, clusters, strict=True))

    def auc_of(sample):  # type: ignore[no-untyped-def]
        y = np.array([t for _, t, _ in sample])
        return roc_auc_score(y, [s for s, _, _ in sample]) if 0 < y.sum() < len(y) else np.nan

    [(low, high)] = cluster_bootstrap(items, lambda i: i[2], auc_of, 400, seed=5)
    fast_low, fast_high = bootstrap_auc(scores, truth, clusters, 400, seed=5)
    assert fast_low == pytest.approx(low, abs=0.02) and fast_high == pytest.approx(high, abs=0.02)
    sums = bootstrap_sums(clusters, np.stack([truth, truth & (scores > 0.5)], axis=1), 400, 5)
    sens_low, sens_high = percentile_interval(sums[:, 1] / sums[:, 0])
    point = (truth & (scores > 0.5)).sum() / truth.sum()
    assert sens_low < point < sens_high and sens_high - sens_low < 0.2
