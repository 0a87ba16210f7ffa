"""One eye's analysis record: the model's result, every grader's read, the reference standard
and how it was reached (``ReferenceRoute``), and its chance of verification. ``records`` reads
them from the database, ``verification`` estimates the chance, the tables consume them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from services.taxonomy.tree import Taxonomy


class ReferenceRoute(StrEnum):
    """How a case's reference diagnosis was reached."""

    CONCORDANT = "concordant read accepted"
    # a case not sent to the panel, but this eye the model could not grade: the grader's read
    # was compared with nothing, so it is not concordant; like a concordant eye it could have
    # been drawn for QC and was not, and the naive analysis takes the read as truth
    MODEL_UNGRADABLE_NOT_SENT = "model ungradable, grader's read only: not drawn for QC"
    PANEL_DISCORDANT = "panel after discordance"
    PANEL_QC = "panel on the QC sample"
    PANEL_TRAINEE = "panel (grader in training)"
    PANEL_PENDING = "awaiting the panel"
    UNGRADABLE = "ungradable: outcome queue"
    FELLOW_UNGRADABLE = "discordant, fellow eye ungradable: not verified"
    # the case went to the outcome queue, never to the panel: the concordant read is recorded
    # (``triaged_read``) but the eye could never be verified, so it has no reference standard
    FELLOW_UNGRADABLE_CONCORDANT = "concordant, fellow eye ungradable: never verifiable"
    NOT_READ = "no grader read"
    NOT_TRIAGED = "model result pending"


VERIFIED = {ReferenceRoute.PANEL_DISCORDANT, ReferenceRoute.PANEL_QC, ReferenceRoute.PANEL_TRAINEE}
# Eyes of the cases the triage did not send to the panel (not drawn for QC): the naive
# analysis takes the grader's read as their truth, the weighted one counts them as unverified.
NOT_SENT = {ReferenceRoute.CONCORDANT, ReferenceRoute.MODEL_UNGRADABLE_NOT_SENT}


def route_not_sent(model_gradable: bool) -> ReferenceRoute:
    """The route of an eye whose case the triage kept from the panel: concordant, unless the
    model could not grade the eye (then there was nothing to agree with)."""
    return ReferenceRoute.CONCORDANT if model_gradable else ReferenceRoute.MODEL_UNGRADABLE_NOT_SENT


@dataclass
class EyeRecord:
    case_key: str
    patient_key: str
    eye: str
    site: str
    camera: str
    route: str
    model_version: str
    age_band: str
    sex: str
    study_day: int
    model_gradable: bool
    model_codes: set[str]
    model_referral: bool
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    top3: list[str]
    reads: dict[str, set[str] | None] = field(
        default_factory=dict
    )  # grader key -> codes, None: ungradable
    triaged_read: set[str] | None = None  # the read the triage compared; None: ungradable or none
    reference: set[str] | None = None
    reference_route: ReferenceRoute = ReferenceRoute.NOT_READ
    # the triage's stored probability that the case went to the panel (its design stratum);
    # 0 for an eye that could never be verified (``services.study.verification``)
    inclusion_probability: float | None = None
    # the estimated probability that the case was verified, within its stratum; None outside
    # the verifiable population (``services.study.verification.estimate_verification``)
    verification_probability: float | None = None
    blind: bool | None = None  # the triaged read's blinding; None: unknown (read elsewhere)
    read_blinded: dict[str, bool | None] = field(default_factory=dict)  # grader key -> blinding
    index_at: datetime | None = None  # when the model's result was recorded
    reference_at: datetime | None = None  # when the reference was reached (read or decision)
    dr_grade: dict[str, Any] | None = None  # the triaged read's DR grade, where the site grades DR
    # no photograph of the eye gradable, one of them beyond the model's guard: "not
    # assessable by this model" (unlike its training photographs), counted apart in the
    # index-test results
    model_unfamiliar: bool = False
    # content-store keys (sha256) of the eye's gradable photographs: what a verified label
    # belongs to when the site's photographs join a training set; never exported
    photographs: list[str] = field(default_factory=list)


def reference_labels(reference: Iterable[str], taxonomy: Taxonomy) -> set[str]:
    """A verified reference as labels for training or refitting: its codes with their
    ancestors, or every normal class when it names no disease."""
    codes = set(reference) or {n.code for n in taxonomy.nodes if n.normal}
    return taxonomy.with_ancestors(codes)


def disease(codes: Iterable[str] | None) -> bool | None:
    """Whether a set of codes means disease (any code), None when there is none (ungradable)."""
    return None if codes is None else bool(set(codes))
