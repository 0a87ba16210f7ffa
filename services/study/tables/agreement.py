"""Paired comparisons of model and graders on the same eyes (McNemar, Newcombe) and agreement
(Cohen's and Fleiss' kappa, Gwet's AC1)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.paired import (
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    mcnemar_exact,
    newcombe_paired,
)
from services.study.records import EyeRecord
from services.study.tables.common import (
    Row,
    has_reference,
    num,
)


def paired(records: Sequence[EyeRecord]) -> list[Row]:
    """Model against the triaged grader read on the same eyes (referral), verified eyes."""
    eyes = [
        r for r in records if has_reference(r) and r.model_gradable and r.triaged_read is not None
    ]
    rows = []
    for _group, wanted in (("diseased", True), ("non-diseased", False)):
        chosen = [r for r in eyes if bool(r.reference) == wanted]
        model_right = [r.model_referral == wanted for r in chosen]
        grader_right = [bool(r.triaged_read) == wanted for r in chosen]
        both = sum(m and g for m, g in zip(model_right, grader_right, strict=True))
        only_model = sum(m and not g for m, g in zip(model_right, grader_right, strict=True))
        only_grader = sum(g and not m for m, g in zip(model_right, grader_right, strict=True))
        neither = len(chosen) - both - only_model - only_grader
        difference = newcombe_paired(both, only_model, only_grader, neither)
        rows.append(
            {
                "comparison": f"{'sensitivity' if wanted else 'specificity'}: model - grader",
                "eyes": len(chosen),
                "both_correct": both,
                "only_model": only_model,
                "only_grader": only_grader,
                "neither": neither,
                "difference": num(difference.estimate),
                "newcombe_low": num(difference.low),
                "newcombe_high": num(difference.high),
                "mcnemar_exact_p": num(mcnemar_exact(both, only_model, only_grader, neither)),
            }
        )
    table = [[0, 0], [0, 0]]
    for r in eyes:
        table[int(r.model_referral)][int(bool(r.triaged_read))] += 1
    kappa = cohen_kappa(table)
    rows.append(
        {
            "comparison": "Cohen's kappa, referral, model vs grader",
            "eyes": kappa.n,
            "difference": num(kappa.kappa),
            "newcombe_low": num(kappa.low),
            "newcombe_high": num(kappa.high),
        }
    )
    several = [r for r in records if len([c for c in r.reads.values() if c is not None]) >= 2]
    if several:
        ratings = np.array(
            [
                [
                    sum(not c for c in r.reads.values() if c is not None),
                    sum(bool(c) for c in r.reads.values() if c is not None),
                ]
                for r in several
            ]
        )
        rows.append(
            {
                "comparison": "Fleiss' kappa, referral, graders",
                "eyes": len(several),
                "difference": num(fleiss_kappa(ratings)),
            }
        )
        rows.append(
            {
                "comparison": "Gwet's AC1, referral, graders",
                "eyes": len(several),
                "difference": num(gwet_ac1(ratings)),
            }
        )
    return rows
