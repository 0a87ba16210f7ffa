"""The study export on a simulated prospective study of 4,670 patients (one visit each, both
eyes photographed): predictions, grader reads, triage, arbitration votes and decisions written
to a fresh PostgreSQL database through the real schema; then ``reports.study_export.export``
writes every format. Prints the export's time and its ratio to reading the analysis set alone
(the baseline, in the same run); the aim is under 30 s on the 2-core machine.

    python bench/stats.py [--patients 4670] [--replicates 500]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reports.study_export import export
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    CaseRead,
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
QC_RATE = 0.10


def simulate(url: str, patients: int, seed: int) -> None:
    from eyescreen.database import upgrade

    upgrade(url)
    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy("fundus")
    level2 = [n.code for n in taxonomy.level(2) if not n.normal]
    prevalence = np.array([0.06, 0.05, 0.02, 0.03, 0.02, 0.005, 0.04, 0.06])[: len(level2)]
    sessions = make_session_factory(make_engine(url))
    with sessions() as session:
        model = ModelVersion(
            name="eyescreen-fundus",
            version="sim",
            route="fundus",
            weights_sha256=uuid.uuid4().hex * 2,
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
            for i in range(3)
        ]
        arbiter = Person(username="arbiter", display_name="A^A", role=Role.ARBITER)
        session.add_all([model, *graders, arbiter])
        session.flush()
        thresholds = {c: 0.5 for c in taxonomy.codes}
        for number in range(patients):
            if number % 500 == 0:
                print(
                    f"  simulated {number:,} / {patients:,} patients", file=sys.stderr, flush=True
                )
            site = "NORTH" if number % 3 else "SOUTH"
            patient = Patient(
                patient_id=f"S{number}",
                name=f"Sim^{number}",
                birth_date=f"{1930 + number % 60}0101",
                sex="FM"[number % 2],
            )
            study = Study(
                patient=patient, study_instance_uid=f"2.25.{number}1", study_date="20261101"
            )
            case = ScreeningCase(study=study, site=site, opened_at=utcnow())
            session.add(case)
            session.flush()
            truth_eyes, model_eyes, read_eyes = {}, {}, {}
            for eye in "RL":
                truth = {c for c, p in zip(level2, prevalence, strict=True) if rng.random() < p}
                instance = Instance(
                    case_pk=case.id,
                    sop_instance_uid=f"2.25.{number}{eye}9",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
                    series_instance_uid=f"2.25.{number}8",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    laterality=eye,
                    route="fundus",
                    calling_ae=f"CAM{number % 2}",
                    sha256="0" * 64,
                    size_bytes=1,
                    state=InstanceState.PREDICTED,
                )
                session.add(instance)
                session.flush()
                probabilities = {}
                for code in level2:
                    mean = 0.75 if code in truth else 0.15
                    probabilities[code] = float(np.clip(rng.normal(mean, 0.18), 0.001, 0.999))
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
                codes = taxonomy.with_ancestors(positive) if positive else set()
                prediction = Prediction(
                    instance_pk=instance.id,
                    model_version_pk=model.id,
                    probabilities=probabilities,
                    thresholds=thresholds,
                    top3=sorted(level2, key=lambda c: -probabilities[c])[:3],
                    referral=bool(positive),
                    quality="gradable",
                    provenance={},
                    findings=[
                        PredictionFinding(
                            code=c,
                            level=taxonomy.node(c).level,
                            probability=probabilities[c],
                            threshold=0.5,
                            positive=(c in codes or (c.startswith("F.NOR") and not positive)),
                        )
                        for c in taxonomy.codes
                    ],
                )
                session.add(prediction)
                read = {c for c in truth if rng.random() < 0.85} | {
                    c for c in level2 if c not in truth and rng.random() < 0.01
                }
                truth_eyes[eye], model_eyes[eye], read_eyes[eye] = truth, codes, read
            grader = graders[number % 3]
            eyes = {e: {"codes": sorted(read_eyes[e]), "ungradable": None} for e in "RL"}
            findings = {
                e: sorted(taxonomy.with_ancestors(read_eyes[e]) if read_eyes[e] else set())
                for e in "RL"
            }
            read = CaseRead(
                case_pk=case.id,
                grader_pk=grader.id,
                version=1,
                eyes=eyes,
                findings=findings,
                referral=any(findings.values()),
                reading_ms=int(rng.integers(3000, 30000)),
                source=ReadSource.WEB,
                amend_reason="",
            )
            session.add(read)
            if number % 10 == 0:  # a second grader on a tenth of the cases, for agreement
                session.add(
                    CaseRead(
                        case_pk=case.id,
                        grader_pk=graders[(number + 1) % 3].id,
                        version=1,
                        eyes=eyes,
                        findings=findings,
                        referral=read.referral,
                        source=ReadSource.WEB,
                        amend_reason="",
                    )
                )
            session.flush()
            discordant = any(set(findings[e]) != set(model_eyes[e]) for e in "RL")
            sampled = not discordant and rng.random() < QC_RATE
            triage = Triage(
                case_pk=case.id,
                read_pk=read.id,
                rule_version="level2.v1",
                conflict="missed_finding" if discordant else ("qc_sample" if sampled else ""),
                sampled=sampled,
                inclusion_probability=1.0 if discordant else QC_RATE,
                to_arbitration=discordant or sampled,
            )
            session.add(triage)
            if discordant or sampled:
                arbitration = ArbitrationCase(
                    case_pk=case.id,
                    reason=triage.conflict,
                    conflict=triage.conflict,
                    rule_version="level2.v1",
                    read_pk=read.id,
                    inclusion_probability=triage.inclusion_probability,
                    state=ArbitrationState.DECIDED,
                    decided_at=utcnow(),
                )
                session.add(arbitration)
                session.flush()
                reference = {
                    e: sorted(taxonomy.with_ancestors(truth_eyes[e]) if truth_eyes[e] else set())
                    for e in "RL"
                }
                session.add(
                    ArbitrationDecision(
                        arbitration_pk=arbitration.id,
                        case_pk=case.id,
                        decided_by_pk=arbiter.id,
                        findings={c: True for v in reference.values() for c in v},
                        referral=any(reference.values()),
                        eyes=reference,
                    )
                )
            if number % 200 == 0:
                session.commit()
        session.commit()
    sessions.kw["bind"].dispose()


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
        if not args.reuse:
            print(f"simulating {args.patients:,} patients...", file=sys.stderr)
            simulate(url, args.patients, seed=4670)
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
                progress=lambda step: print(f"  {step}", file=sys.stderr, flush=True),
            )
            elapsed = time.perf_counter() - started
            sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
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
    finally:
        if args.keep or args.reuse:
            print(f"database kept: {name}", file=sys.stderr)
        else:
            drop(admin, name)


def drop(admin: Any, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


if __name__ == "__main__":
    main()
