"""Which eyes could receive the reference standard, and the estimated probability that each
did: the verification model the weighted (Begg-Greenes) analysis divides by.

Inverse-probability weighting needs every eye it stands for to have had a chance of being
verified (positivity). Some eyes never had one: an eye the grader could not grade, and the
fellow eye of such a case (the case goes to the outcome queue, not to the panel), whether the
model and grader agree on it or not. They are not part of the verifiable population; their
probability of verification is 0 and the weighted analysis does not stand for them (the
export says so). Eyes still with the panel could be verified: they stay in the population
and count as not (yet) verified, missing at random within their case's design stratum.

The probability is estimated per design stratum (the triage's stored inclusion probability:
1 for cases sent for certain, the QC rate for concordant ones) as the share of the stratum's
cases whose reference the panel decided, which is the two-phase design with phase-2
probabilities estimated within strata (survey's ``twophase`` without ``probs``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from services.study.eye import NOT_SENT, VERIFIED, EyeRecord, ReferenceRoute

# Routes of eyes that could receive the reference standard: verified, waiting for the panel,
# or kept from the panel by the triage and so eligible for the QC draw.
VERIFIABLE = VERIFIED | NOT_SENT | {ReferenceRoute.PANEL_PENDING}


def verifiable(record: EyeRecord) -> bool:
    return record.reference_route in VERIFIABLE and record.inclusion_probability is not None


def estimate_verification(records: Sequence[EyeRecord]) -> None:
    """Set each record's ``verification_probability`` (the estimated probability that its case
    was verified; None outside the verifiable population) and give the never-verifiable eyes
    their design probability of verification, 0, in place of the triage's queue probability."""
    cases: dict[float, set[str]] = defaultdict(set)
    decided: dict[float, set[str]] = defaultdict(set)
    for record in records:
        if not verifiable(record):
            continue
        stratum = float(record.inclusion_probability or 0.0)
        cases[stratum].add(record.case_key)
        if record.reference_route in VERIFIED:
            decided[stratum].add(record.case_key)
    share = {s: len(decided[s]) / len(members) for s, members in cases.items()}
    for record in records:
        if verifiable(record):
            record.verification_probability = share[float(record.inclusion_probability or 0.0)]
        else:
            record.verification_probability = None
            if record.inclusion_probability is not None:
                record.inclusion_probability = 0.0
