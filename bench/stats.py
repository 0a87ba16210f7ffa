"""The study export on a simulated prospective study of 4,670 patients (one visit each, both
eyes photographed): predictions, grader reads, triage, arbitration votes and decisions written
to a fresh PostgreSQL database through the real schema; then ``reports.study_export.export``
writes every format. Prints the export's time and its ratio to reading the analysis set alone
(the baseline, in the same run); the aim is under 30 s on the 2-core machine.

    python bench/stats.py [--patients 4670] [--replicates 500]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.study_simulation import GRADERS, PREVALENCE, SimVisit, simulate_visits, true_sensitivity
from reports.study_export import export
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    CaseRead,
    ExpectedVisit,
    Instance,
    InstanceState,
    ModelVersion,
    Patient,
    Person,
    PersonSite,
    Prediction,
    PredictionFinding,
    ReadSource,
    Role,
    ScreeningCase,
    Study,
    Triage,
)
from services.db.session import make_engine, make_session_factory
from services.study.records import Filters, gather
from services.study.tables import Options
from services.taxonomy.tree import load_taxonomy

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
FOUR_HOURS = 4 * 3600
SEED = 4670


def simulate(url: str, patients: int, seed: int) -> list[SimVisit]:
    """Write the simulated study (``bench.study_simulation``) through the real schema."""
    from eyescreen.database import upgrade

    upgrade(url)
    visits = simulate_visits(patients, seed)
    taxonomy = load_taxonomy("fundus")
    rng = np.random.default_rng(seed + 1)
    sessions = make_session_factory(make_engine(url))
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    with sessions() as session:
        model = ModelVersion(
            name="eyescreen-fundus",
            version="sim",
            route="fundus",
            weights_sha256=uuid.UUID(int=seed).hex * 2,
            taxonomy_version="1.0",
            path="sim",
        )
        graders = [
            Person(
                username=f"grader{i}",
                display_name=f"G^{i}",
                role=Role.GRADER,
                sites=[PersonSite(site="NORTH"), PersonSite(site="SOUTH")],
            )
            for i in range(GRADERS)
        ]
        arbiter = Person(username="arbiter", display_name="A^A", role=Role.ARBITER)
        session.add_all([model, *graders, arbiter])
        session.flush()
        thresholds = {c: 0.5 for c in taxonomy.codes}
        for visit in visits:
            if visit.number % 500 == 0:
                print(f"  written {visit.number:,} / {patients:,} patients", file=sys.stderr)
            seen = start + timedelta(minutes=5 * visit.number)
            _write_visit(session, visit, model, graders, arbiter, thresholds, seen, rng)
            if visit.number % 200 == 0:
                session.commit()
        _expected_not_photographed(session, patients)
        session.commit()
    sessions.kw["bind"].dispose()
    return visits


NO_SHOW = 30  # one patient in 30 expected on the worklist does not come to be photographed
WALK_IN = 97  # one photographed patient in 97 was not on the worklist


def _expected_not_photographed(session: Any, patients: int) -> None:
    """The worklist's patients who never came (the flow's 'expected, not photographed')."""
    for number in range(patients // NO_SHOW):
        session.add(
            ExpectedVisit(
                site="NORTH" if number % 3 else "SOUTH",
                visit_key=f"acc:NS{number}",
                scheduled_date="20261101",
                accession_number=f"NS{number}",
                patient_id=f"NS{number}",
            )
        )


def _write_visit(
    session: Any,
    visit: SimVisit,
    model: ModelVersion,
    graders: list[Person],
    arbiter: Person,
    thresholds: dict[str, float],
    seen: datetime,
    rng: np.random.Generator,
) -> None:
    taxonomy = load_taxonomy("fundus")
    number = visit.number
    patient = Patient(
        patient_id=f"S{number}",
        name=f"Sim^{number}",
        birth_date=visit.birth_date,
        sex=visit.sex,
    )
    study = Study(patient=patient, study_instance_uid=f"2.25.{number}1", study_date="20261101")
    case = ScreeningCase(study=study, site=visit.site, opened_at=seen)
    session.add(case)
    session.flush()
    if number % WALK_IN:
        session.add(
            ExpectedVisit(
                site=visit.site,
                visit_key=f"acc:A{number}",
                scheduled_date="20261101",
                accession_number=f"A{number}",
                patient_id=f"S{number}",
                case_pk=case.id,
                matched_by="accession",
            )
        )
    for side, eye in visit.eyes.items():
        instance = Instance(
            case_pk=case.id,
            sop_instance_uid=f"2.25.{number}{'RL'.index(side)}9",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
            series_instance_uid=f"2.25.{number}8",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            laterality=side,
            route="fundus",
            calling_ae=f"CAM{number % 2}",
            sha256="0" * 64,
            size_bytes=1,
            state=InstanceState.PREDICTED,
        )
        session.add(instance)
        session.flush()
        probabilities = eye.probabilities
        level2 = [c for c in PREVALENCE]
        session.add(
            Prediction(
                instance_pk=instance.id,
                model_version_pk=model.id,
                probabilities=probabilities,
                thresholds=thresholds,
                top3=sorted(level2, key=lambda c: -probabilities[c])[:3],
                referral=bool(eye.model_codes) or not eye.photo_ok,
                quality="gradable" if eye.photo_ok else "ungradable",
                provenance={},
                created_at=seen + timedelta(seconds=30),
                findings=[
                    PredictionFinding(
                        code=c,
                        level=taxonomy.node(c).level,
                        probability=probabilities[c],
                        threshold=0.5,
                        positive=(
                            c in eye.model_codes
                            or (c.startswith("F.NOR") and eye.photo_ok and not eye.model_codes)
                        ),
                    )
                    for c in taxonomy.codes
                ],
            )
        )
    reads = []
    for k, (grader, eyes) in enumerate(visit.reads):
        read = CaseRead(
            case_pk=case.id,
            grader_pk=graders[grader].id,
            version=1,
            eyes={
                e: {
                    "codes": [] if codes is None else sorted(c for c in codes if c.count(".") == 2),
                    "ungradable": "poor image quality" if codes is None else None,
                }
                for e, codes in eyes.items()
            },
            findings={e: sorted(codes or set()) for e, codes in eyes.items()},
            referral=any(codes is None or bool(codes) for codes in eyes.values()),
            reading_ms=int(rng.integers(3000, 30000)),
            source=ReadSource.WEB,
            amend_reason="",
            blinded=visit.blinded,
            created_at=seen + timedelta(seconds=float(rng.uniform(600, FOUR_HOURS)) + k),
        )
        session.add(read)
        reads.append(read)
    session.flush()
    triage = Triage(
        case_pk=case.id,
        read_pk=reads[0].id,
        rule_version="level2.v1",
        conflict=visit.conflict,
        sampled=visit.conflict == "qc_sample",
        inclusion_probability=visit.inclusion_probability,
        to_arbitration=visit.to_panel,
    )
    session.add(triage)
    if not visit.to_panel:
        return
    decided_at = reads[0].created_at + timedelta(hours=float(rng.gamma(2.0, 18.0)))
    arbitration = ArbitrationCase(
        case_pk=case.id,
        reason=visit.conflict,
        conflict=visit.conflict,
        rule_version="level2.v1",
        read_pk=reads[0].id,
        inclusion_probability=visit.inclusion_probability,
        state=ArbitrationState.DECIDED if visit.decided else ArbitrationState.OPEN,
        decided_at=decided_at if visit.decided else None,
        outcome="re-image" if visit.decided and visit.conflict == "ungradable" else None,
    )
    session.add(arbitration)
    session.flush()
    if not visit.decided or visit.conflict == "ungradable":
        return
    reference = {
        e: sorted(taxonomy.with_ancestors(eye.truth) if eye.truth else set())
        for e, eye in visit.eyes.items()
    }
    session.add(
        ArbitrationDecision(
            arbitration_pk=arbitration.id,
            case_pk=case.id,
            decided_by_pk=arbiter.id,
            findings={c: True for v in reference.values() for c in v},
            referral=any(reference.values()),
            eyes=reference,
            decided_at=decided_at,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=4670)
    parser.add_argument("--replicates", type=int, default=500)
    parser.add_argument("--keep", action="store_true", help="keep the database, print its name")
    parser.add_argument("--reuse", help="a database a --keep run left (skips the simulation)")
    args = parser.parse_args()
    name = args.reuse or f"eyescreen_stats_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    if not args.reuse:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        visits = simulate_visits(args.patients, SEED)
        if not args.reuse:
            print(f"simulating {args.patients:,} patients...", file=sys.stderr)
            simulate(url, args.patients, seed=SEED)
        sessions = make_session_factory(make_engine(url))
        key = b"bench-key" * 4
        with sessions() as session:
            started = time.perf_counter()
            records = gather(session, Filters(), key)
            baseline = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as folder, sessions() as session:
            started = time.perf_counter()
            snapshot = export(
                session,
                Filters(),
                Path(folder),
                key,
                Options(args.replicates, 1),
                progress=lambda step: print(
                    f"  {time.perf_counter() - started:6.1f} s  {step}", file=sys.stderr, flush=True
                ),
            )
            elapsed = time.perf_counter() - started
            sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
            accuracy = list(csv.DictReader((Path(folder) / "accuracy.csv").open()))
        print(
            f"\n{args.patients:,} patients, {len(records):,} eyes, "
            f"{args.replicates} bootstrap replicates"
        )
        print("| step | seconds | ratio to reading the analysis set |")
        print("| --- | ---: | ---: |")
        print(f"| read the analysis set (baseline) | {baseline:.1f} | 1.0 |")
        print(f"| whole export (CSV, XLSX, HTML) | {elapsed:.1f} | {elapsed / baseline:.1f} |")
        print(
            f"aim < 30 s: {'met' if elapsed < 30 else 'NOT met'}; {snapshot['eyes']} eyes; "
            f"files: {', '.join(f'{k} {v // 1024} KB' for k, v in sorted(sizes.items()))}"
        )
        print_bias(accuracy, visits)
    finally:
        if args.keep or args.reuse:
            print(f"database kept: {name}", file=sys.stderr)
        else:
            drop(admin, name)


def print_bias(accuracy: list[dict[str, str]], visits: list[SimVisit]) -> None:
    """The model's sensitivity for any disease and three classes: the simulation's truth, the
    weighted and the naive estimates with their patient-clustered intervals."""
    print("\n| class | truth | weighted (95 % CI) | naive (95 % CI) |")
    print("| --- | ---: | ---: | ---: |")
    for code in ("", "F.VRD.RDET", "F.LENS.CAT", "F.GLAU.GLAU"):
        rows = {r["analysis"]: r for r in accuracy if r["reader"] == "model" and r["code"] == code}
        cells = [
            f"{rows[a]['sensitivity']} ({rows[a]['sensitivity_low']}-{rows[a]['sensitivity_high']})"
            for a in ("weighted (Begg-Greenes)", "naive")
        ]
        name = rows["naive"]["class"]
        print(f"| {name} | {true_sensitivity(visits, code):.4f} | {cells[0]} | {cells[1]} |")


def drop(admin: Any, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


if __name__ == "__main__":
    main()
