"""The model's referral accuracy in the subgroups the protocol names (prespecified or
exploratory), weighted and naive, with patient cluster-bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_ratios
from services.study.protocol import Protocol
from services.study.records import EyeRecord
from services.study.tables.common import ANALYSES, Options, Row, bootstrap_label, num, truth_weight


def subgroups(records: Sequence[EyeRecord], protocol: Protocol, options: Options) -> list[Row]:
    groups = [(a, "prespecified") for a in protocol.prespecified] + [
        (a, "exploratory") for a in protocol.exploratory
    ]
    labels: list[Row] = []
    numerators, denominators = [], []
    for attribute, kind in groups:
        for value in sorted({str(getattr(r, attribute)) for r in records}):
            for analysis in ANALYSES:
                terms = np.zeros((len(records), 4))  # diseased, found, healthy, cleared
                eyes = 0
                for i, record in enumerate(records):
                    reference = truth_weight(record, analysis)
                    if (
                        reference is None
                        or not record.model_gradable
                        or str(getattr(record, attribute)) != value
                    ):
                        continue
                    truth, weight = bool(reference[0]), reference[1]
                    said = record.model_referral
                    terms[i] = weight * np.array(
                        [truth, truth and said, not truth, not truth and not said], dtype=float
                    )
                    eyes += 1
                if not eyes:
                    continue
                labels.append(
                    {
                        "subgroup": attribute,
                        "value": value,
                        "analysis": analysis,
                        "protocol": kind,
                        "eyes": eyes,
                        "diseased_weighted": num(float(terms[:, 0].sum()), 2),
                    }
                )
                numerators += [terms[:, 1], terms[:, 3]]
                denominators += [terms[:, 0], terms[:, 2]]
    if not labels:
        return []
    results = bootstrap_ratios(
        [r.patient_key for r in records],
        np.column_stack(numerators),
        np.column_stack(denominators),
        options.replicates,
        options.seed,
    )
    rows = []
    for k, label in enumerate(labels):
        (sens, s_low, s_high), (spec, p_low, p_high) = results[2 * k], results[2 * k + 1]
        rows.append(
            label
            | {
                "sensitivity": num(sens),
                "sensitivity_low": num(s_low),
                "sensitivity_high": num(s_high),
                "specificity": num(spec),
                "specificity_low": num(p_low),
                "specificity_high": num(p_high),
                "interval": bootstrap_label(options),
            }
        )
    return rows
