"""A simulated prospective screening study with the features that make its statistics hard,
shared by ``bench/stats.py`` (which writes it to a database through the real schema) and the
tests (which turn it into analysis records directly and know the truth):

- two eyes of a patient are correlated: disease is drawn per patient and then per eye (most
  conditions bilateral), and a patient's severity is shared by the eyes;
- subtle disease is missed by the model and the grader alike, so concordant misses hide in the
  unverified concordant cases (the naive analysis' bias);
- some photographs are ungradable (for the model and mostly for the grader too);
- a grader in training, whose every case goes to the panel;
- a truly independent second read on a share of the cases;
- some panel cases still undecided when the study is exported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.study.records import EyeRecord
from services.taxonomy.tree import load_taxonomy

QC_RATE = 0.10
SECOND_READ = 0.12  # share of visits with an independent second read
PENDING = 0.02  # share of panel cases still open
TRAINEE = 3  # the grader in training (graders 0-2 are signed off)
GRADERS = 4
# patient-level prevalence per level-2 class, then the chance the fellow eye shares it
PREVALENCE = {
    "F.GLAU.GLAU": 0.06,
    "F.VRD.MAC": 0.05,
    "F.VRD.OPT": 0.02,
    "F.VRD.REF": 0.03,
    "F.VRD.RDEG": 0.02,
    "F.VRD.RDET": 0.012,
    "F.VRD.RVAS": 0.04,
    "F.LENS.CAT": 0.06,
}
BILATERAL = 0.7
SUBTLE = 0.3  # share of patients whose disease is subtle: missed by model and grader alike


@dataclass
class SimEye:
    truth: set[str]  # level-2 codes
    severity: float  # 0 mild .. 1 severe
    photo_ok: bool
    probabilities: dict[str, float]  # every class, both levels and the normal ones
    model_codes: set[str]  # positive disease codes, both levels (empty when ungradable)


@dataclass
class SimVisit:
    number: int
    site: str
    sex: str
    birth_date: str
    eyes: dict[str, SimEye]
    reads: list[tuple[int, dict[str, set[str] | None]]]  # (grader, eye -> codes or None)
    conflict: str = ""
    inclusion_probability: float = 1.0
    to_panel: bool = False
    decided: bool = False
    blinded: bool | None = None
    extra: dict[str, object] = field(default_factory=dict)


def _read(
    rng: np.random.Generator, eye: SimEye, taxonomy_codes: list[str], skill: float
) -> set[str] | None:
    """A grader's read of an eye: ungradable photographs mostly called so; a condition seen
    with a chance that grows with severity and skill; rare false findings."""
    if not eye.photo_ok and rng.random() < 0.85:
        return None
    if eye.photo_ok and rng.random() < 0.004:
        return None
    seen = {c for c in sorted(eye.truth) if rng.random() < min(0.99, skill + 0.8 * eye.severity)}
    seen |= {c for c in taxonomy_codes if c not in eye.truth and rng.random() < 0.004}
    return seen


def simulate_visits(patients: int, seed: int) -> list[SimVisit]:
    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy("fundus")
    level2 = [n.code for n in taxonomy.level(2) if not n.normal]
    visits = []
    for number in range(patients):
        patient_disease = {c for c in level2 if rng.random() < PREVALENCE[c]}
        subtle = rng.random() < SUBTLE
        patient_severity = float(rng.uniform(0, 0.3) if subtle else rng.uniform(0.45, 1))
        old = number % 60 < 15
        eyes: dict[str, SimEye] = {}
        first = rng.random() < 0.5
        for k, side in enumerate("RL"):
            truth = set()
            for code in sorted(patient_disease):
                primary = (k == 0) == first
                if primary or rng.random() < BILATERAL:
                    truth.add(code)
            truth |= {c for c in level2 if rng.random() < 0.002}
            severity = float(np.clip(patient_severity + rng.normal(0, 0.08), 0, 1))
            photo_ok = rng.random() > (0.06 if old else 0.02)
            probabilities = {}
            for code in level2:
                mean = 0.3 + 0.6 * severity if code in truth else 0.12
                probabilities[code] = float(np.clip(rng.normal(mean, 0.16), 0.001, 0.999))
            for node in taxonomy.level(1):
                children = [
                    probabilities[c.code]
                    for c in taxonomy.children(node.code)
                    if c.code in probabilities
                ]
                probabilities[node.code] = max(children) if children else 0.0
            normal = 1 - max(probabilities[c] for c in level2)
            probabilities["F.NOR"] = probabilities["F.NOR.NOR"] = normal
            positive = {c for c in level2 if probabilities[c] >= 0.5}
            codes = taxonomy.with_ancestors(positive) if positive and photo_ok else set()
            eyes[side] = SimEye(truth, severity, photo_ok, probabilities, codes)
        grader = TRAINEE if number % 9 == 4 else number % 3
        skill = 0.05 if grader == TRAINEE else 0.15
        reads = [(grader, {s: _read(rng, e, level2, skill) for s, e in eyes.items()})]
        if rng.random() < SECOND_READ:
            second = (grader + 1 + int(rng.integers(0, GRADERS - 1))) % GRADERS
            reads.append((second, {s: _read(rng, e, level2, 0.15) for s, e in eyes.items()}))
        visit = SimVisit(
            number=number,
            site="NORTH" if number % 3 else "SOUTH",
            sex="FM"[number % 2],
            birth_date=f"{1930 + number % 60}0101",
            eyes=eyes,
            reads=[(g, {s: _ancestors(taxonomy, c) for s, c in r.items()}) for g, r in reads],
            blinded=None if number % 7 == 0 else bool(number % 5),
        )
        _triage(rng, visit)
        visits.append(visit)
    return visits


def _ancestors(taxonomy: object, codes: set[str] | None) -> set[str] | None:
    if codes is None:
        return None
    return taxonomy.with_ancestors(codes) if codes else set()  # type: ignore[attr-defined]


def _triage(rng: np.random.Generator, visit: SimVisit) -> None:
    """As ``services.clinic.triage``: an ungradable eye to the outcome queue, a trainee's read
    to the panel, a discordant one to the panel, a concordant one by the QC draw."""
    grader, read = visit.reads[0]
    model = {s: e.model_codes for s, e in visit.eyes.items()}
    if any(codes is None for codes in read.values()):
        visit.conflict = "ungradable"
    elif grader == TRAINEE:
        visit.conflict = "new_grader"
    elif model_referral(visit) != any(read.values()):
        visit.conflict = "referral_flip"
    elif any(read[s] != model[s] for s in "RL"):
        visit.conflict = "missed_finding"
    if visit.conflict:
        visit.to_panel, visit.inclusion_probability = True, 1.0
    else:
        visit.to_panel = rng.random() < QC_RATE
        visit.inclusion_probability = QC_RATE
        if visit.to_panel:
            visit.conflict = "qc_sample"
    visit.decided = visit.to_panel and rng.random() > PENDING


def true_sensitivity(visits: list[SimVisit], code: str) -> float:
    """The model's sensitivity for a class over every eye it could grade (the truth the
    weighted estimate should recover); code "" is any disease (the referral)."""
    found = total = 0
    for visit in visits:
        for eye in visit.eyes.values():
            if not eye.photo_ok:
                continue
            diseased = bool(eye.truth) if not code else code in _with_parents(eye.truth)
            if diseased:
                total += 1
                found += bool(eye.model_codes) if not code else code in eye.model_codes
    return found / total


def _with_parents(codes: set[str]) -> set[str]:
    return load_taxonomy("fundus").with_ancestors(codes) if codes else set()


def model_referral(visit: SimVisit) -> bool:
    """The model refers a visit with a finding or an eye it could not grade."""
    return any(e.model_codes or not e.photo_ok for e in visit.eyes.values())


def eye_records(visits: list[SimVisit]) -> list[EyeRecord]:
    """The analysis records ``services.study.records.gather`` reads from the database this
    simulation writes (``bench/stats.py``), made directly: for tests that need thousands of
    patients and the truth behind them."""
    from services.study.eye import route_not_sent
    from services.study.records import EyeRecord, ReferenceRoute, _ungradable_case
    from services.study.verification import estimate_verification

    routes = {
        "qc_sample": ReferenceRoute.PANEL_QC,
        "new_grader": ReferenceRoute.PANEL_TRAINEE,
    }
    records = []
    for visit in visits:
        for side, eye in visit.eyes.items():
            record = EyeRecord(
                case_key=f"case-{visit.number}",
                patient_key=f"patient-{visit.number}",
                eye=side,
                site=visit.site,
                camera=f"CAM{visit.number % 2}",
                route="fundus",
                model_version="eyescreen-fundus sim",
                age_band="unknown",
                sex=visit.sex,
                study_day=0,
                model_gradable=eye.photo_ok,
                model_codes=set(eye.model_codes),
                model_referral=bool(eye.model_codes) or not eye.photo_ok,
                probabilities=dict(eye.probabilities) if eye.photo_ok else {},
                thresholds={},
                top3=sorted((c for c in PREVALENCE), key=lambda c: -eye.probabilities[c])[:3],
                reads={f"grader-{g}": read[side] for g, read in visit.reads},
                inclusion_probability=visit.inclusion_probability,
                blind=visit.blinded,
            )
            triaged = visit.reads[0][1][side]
            record.triaged_read = None if triaged is None else set(triaged)
            if not visit.to_panel:
                record.reference_route = route_not_sent(eye.photo_ok)
                record.reference = record.triaged_read
            elif visit.conflict == "ungradable":
                _ungradable_case(record)
            elif not visit.decided:
                record.reference_route = ReferenceRoute.PANEL_PENDING
            else:
                record.reference_route = routes.get(visit.conflict, ReferenceRoute.PANEL_DISCORDANT)
                record.reference = _with_parents(eye.truth)
            records.append(record)
    estimate_verification(records)
    return records


def true_auc(visits: list[SimVisit]) -> float:
    """The AUC of the model's disease risk (its highest level-1 disease probability) for any
    disease over every eye it could grade."""
    from sklearn.metrics import roc_auc_score

    taxonomy = load_taxonomy("fundus")
    level1 = [n.code for n in taxonomy.level(1) if not n.normal]
    scores, truth = [], []
    for visit in visits:
        for eye in visit.eyes.values():
            if eye.photo_ok:
                scores.append(max(eye.probabilities[c] for c in level1))
                truth.append(bool(eye.truth))
    return float(roc_auc_score(truth, scores))
