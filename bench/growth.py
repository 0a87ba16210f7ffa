"""How the database and the queries people wait on grow with the number of images.

Generates a PostgreSQL database of the project's schema (the Alembic head) at 1, 5 and 20
million images by default, growing one database stage by stage, and times at each stage what a
user waits for: the grader's worklist and place in it, the triage sweep, the dashboard, the
failsafe refresh and the study export of one site's last month. Prints milliseconds and each
figure as a ratio to the first stage, and the size of each table.

    python bench/growth.py --stages 1000000,5000000,20000000 --json runs/growth.json

The shape of the data: 10 sites, four photographs per visit (two per eye), two visits per
patient, visits spread evenly over the years so the newest month holds a fixed share; every
photograph read by the model (13 findings each), every visit read by a grader, triaged and
reported once; one visit in twenty at the panel; the newest 2,000 visits of each site unread.
Data rows are generated in SQL (generate_series) in chunks, so growth costs minutes, not hours.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eyescreen.database import upgrade
from services.clinic import dashboard, grading
from services.clinic.triage import untriaged_cases
from services.db.models import Person
from services.study.records import Filters, gather
from services.taxonomy.tree import load_taxonomy
from services.workflow.failsafe import FailsafePolicy, refresh

SITES = 10
IMAGES_PER_CASE = 4
UNREAD_PER_SITE = 2_000
AWAITING_SWEEP = 300
SECONDS_PER_CASE = 30.0  # 2,880 visits a day over the ten sites: 20 M images in about 5 years
START = datetime(2020, 1, 1, 8, tzinfo=UTC)
CHUNK_CASES = 250_000
FUNDUS = load_taxonomy("fundus")
CODES = [(node.code, node.level) for node in FUNDUS.nodes]


def _probabilities_json() -> str:
    return json.dumps({code: 0.123456789 for code, _ in CODES})


def _seed(engine: Any) -> None:
    with engine.begin() as db:
        db.execute(
            text(
                "INSERT INTO model_version (id, name, version, route, weights_sha256,"
                " taxonomy_version, path, created_at) VALUES (1, 'fundus', '1.3', 'fundus',"
                " repeat('a', 64), '1.0', 'fundus.pt', now())"
            )
        )
        for site in range(SITES):
            db.execute(
                text(
                    "INSERT INTO person (id, username, display_name, role, active, created_at,"
                    " failed_logins, arbitrate_all) VALUES (:id, :u, 'Grader^Bench', 'grader',"
                    " true, now(), 0, false)"
                ),
                {"id": site + 1, "u": f"grader{site}"},
            )
            db.execute(
                text("INSERT INTO person_site (person_pk, site) VALUES (:p, :s)"),
                {"p": site + 1, "s": f"site-{site}"},
            )


def _statements() -> tuple[list[str], list[str]]:
    """SQL for a range of visits (:a..:b) with everything the machine does, and for the
    graders' reads of a range; :read_until marks the newest read visit."""
    codes = ", ".join(f"('{code}', {level})" for code, level in CODES)
    visits = [
        # Two visits per patient: patient p owns cases 2p-1 and 2p.
        """INSERT INTO patient (id, patient_id, issuer, name, birth_date, sex, created_at)
           SELECT p, 'P' || p, '', 'Doe^Jane', '19600101', CASE WHEN p % 2 = 0 THEN 'F'
           ELSE 'M' END, now() FROM generate_series((:a + 1) / 2, (:b + 1) / 2) AS p
           ON CONFLICT DO NOTHING""",
        """INSERT INTO study (id, patient_pk, study_instance_uid, study_date, accession_number,
           created_at)
           SELECT c, (c + 1) / 2, '2.25.1.' || c,
                  to_char((:start + c * :step) AT TIME ZONE 'UTC', 'YYYYMMDD'), 'A' || c,
                  :start + c * :step
           FROM generate_series(:a, :b) AS c""",
        """INSERT INTO screening_case (id, study_pk, state, referral, opened_at, last_image_at,
           closed_at, site, urgent, graded_at)
           SELECT c, c, 'closed', CASE WHEN c <= :read_until THEN c % 7 = 0 END,
                  :start + c * :step, :start + c * :step,
                  :start + c * :step + interval '1 hour', 'site-' || (c % 10), c % 50 = 0,
                  CASE WHEN c <= :read_until THEN :start + c * :step + interval '2 hours' END
           FROM generate_series(:a, :b) AS c""",
        """INSERT INTO instance (id, case_pk, sop_instance_uid, sop_class_uid,
           series_instance_uid, transfer_syntax_uid, laterality, route, calling_ae, sha256,
           size_bytes, state, received_at)
           SELECT (c - 1) * 4 + j, c, '2.25.2.' || ((c - 1) * 4 + j),
                  '1.2.840.10008.5.1.4.1.1.77.1.5.1', '2.25.3.' || c, '1.2.840.10008.1.2.4.50',
                  CASE WHEN j <= 2 THEN 'R' ELSE 'L' END, 'fundus', 'FUNDUSCAM',
                  md5(c::text || j) || md5(j::text || c), 480000, 'predicted',
                  :start + c * :step
           FROM generate_series(:a, :b) AS c, generate_series(1, 4) AS j""",
        """INSERT INTO prediction (id, instance_pk, model_version_pk, probabilities, thresholds,
           top3, referral, quality, provenance, created_at)
           SELECT i, i, 1, CAST(:probs AS json), CAST(:probs AS json),
                  '["F.VRD.DR", "F.GLAU.GLAU", "F.LENS.CAT"]', i % 7 = 0, 'gradable',
                  '{"device": "cpu", "batch": 32}', :start + (i / 4) * :step
           FROM generate_series((:a - 1) * 4 + 1, :b * 4) AS i""",
        f"""INSERT INTO prediction_finding (prediction_pk, code, level, probability, threshold,
           positive)
           SELECT i, code, level, 0.123456789, 0.5, i % 7 = 0 AND level = 2
           FROM generate_series((:a - 1) * 4 + 1, :b * 4) AS i,
                (VALUES {codes}) AS codes(code, level)""",
        """INSERT INTO report (id, case_pk, content_key, verified, sop_instance_uid, sha256,
           created_at)
           SELECT c, c, md5(c::text) || md5('k' || c), false, '2.25.4.' || c, md5(c::text),
                  :start + c * :step + interval '5 minutes'
           FROM generate_series(:a, :b) AS c""",
        """INSERT INTO report_delivery (id, report_pk, destination, state, attempts,
           last_status, next_attempt_at, delivered_at, channel, in_doubt, commitment_uid,
           commitment_requested_at, committed_at)
           SELECT c, c, 'PACS@pacs:104', 'delivered', 1, 0, :start + c * :step,
                  :start + c * :step + interval '6 minutes', 'dicom', false, '2.25.5.' || c,
                  :start + c * :step + interval '6 minutes',
                  :start + c * :step + interval '7 minutes'
           FROM generate_series(:a, :b) AS c""",
    ]
    reads = [
        """UPDATE screening_case SET graded_at = opened_at + interval '2 hours',
           referral = id % 7 = 0 WHERE id BETWEEN :a AND :b AND graded_at IS NULL""",
        """INSERT INTO case_read (id, case_pk, grader_pk, version, eyes, findings, referral,
           reading_ms, source, amend_reason, blinded, created_at)
           SELECT c, c, c % 10 + 1, 1, CAST(:eyes AS json), '{"R": [], "L": []}', c % 7 = 0,
                  45000, 'web', '', true, :start + c * :step + interval '2 hours'
           FROM generate_series(:a, :b) AS c""",
        # Each read visit opened once by its grader: the audit trail of a person's access.
        """INSERT INTO audit_event (at, person_pk, action, case_pk, detail, address, request_id)
           SELECT :start + c * :step + interval '2 hours', c % 10 + 1, 'case.view', c, '{}',
                  '10.0.0.1', ''
           FROM generate_series(:a, :b) AS c""",
    ]
    return visits, reads


TRIAGE = [
    """INSERT INTO triage (id, case_pk, read_pk, rule_version, conflict, sampled,
       inclusion_probability, to_arbitration, at)
       SELECT c, c, c, 'referral-v1', CASE WHEN c % 20 = 0 THEN 'referral' ELSE '' END,
              false, CASE WHEN c % 20 = 0 THEN 1.0 ELSE 0.05 END, c % 20 = 0,
              :start + c * :step + interval '2 hours'
       FROM generate_series(:a, :b) AS c""",
    """INSERT INTO arbitration_case (id, case_pk, reason, state, opened_at, decided_at,
       conflict, rule_version, read_pk, inclusion_probability, escalated)
       SELECT c / 20, c, 'model and grader disagree', 'decided',
              :start + c * :step + interval '2 hours', :start + c * :step + interval '1 day',
              'referral', 'referral-v1', c, 1.0, false
       FROM generate_series(:a, :b) AS c WHERE c % 20 = 0""",
]
EYES = '{"R": {"codes": [], "ungradable": null}, "L": {"codes": [], "ungradable": null}}'


def _run(engine: Any, statements: list[str], first: int, last: int, read_until: int) -> None:
    if last < first:
        return
    params = {
        "a": first,
        "b": last,
        "read_until": read_until,
        "start": START,
        "step": timedelta(seconds=SECONDS_PER_CASE),
        "probs": _probabilities_json(),
        "eyes": EYES,
    }
    with engine.begin() as db:
        db.execute(text("SET LOCAL synchronous_commit = off"))
        for statement in statements:
            db.execute(text(statement), params)


class Grower:
    """Grows the database visit range by visit range. Every visit but the newest
    UNREAD_PER_SITE of each site is read; the newest AWAITING_SWEEP read visits wait for
    the triage sweep (the model finished after the read); all older ones are triaged. Reads
    and triage are only ever added, as the backlog moves on: nothing generated is deleted."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.visits, self.reads = _statements()
        self.cases = self.read = self.triaged = 0

    def grow_to(self, cases: int, progress: Callable[[int], None]) -> None:
        read_until = max(0, cases - UNREAD_PER_SITE * SITES)
        triaged_until = max(0, read_until - AWAITING_SWEEP)
        for first in range(self.cases + 1, cases + 1, CHUNK_CASES):
            last = min(cases, first + CHUNK_CASES - 1)
            _run(self.engine, self.visits, first, last, read_until)
            progress(last)
        # The previous backlog is read now; the new visits' reads came with them above.
        for first in range(self.read + 1, read_until + 1, CHUNK_CASES):
            last = min(read_until, first + CHUNK_CASES - 1)
            _run(self.engine, self.reads, first, last, read_until)
        for first in range(self.triaged + 1, triaged_until + 1, CHUNK_CASES):
            last = min(triaged_until, first + CHUNK_CASES - 1)
            _run(self.engine, TRIAGE, first, last, read_until)
        self.cases, self.read, self.triaged = cases, read_until, triaged_until
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.execute(text("VACUUM ANALYZE"))


def _timed(call: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of ``repeats`` calls, after one to warm the caches."""
    call()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2)


def _queries(sessions: sessionmaker[Session], last_case: int, repeats: int) -> dict[str, float]:
    newest_day = (START + timedelta(seconds=SECONDS_PER_CASE * last_case)).date()
    month = Filters(
        date_from=newest_day - timedelta(days=30), date_to=newest_day, sites=("site-3",)
    )
    policy = FailsafePolicy(timedelta(hours=24), timedelta(hours=24), timedelta(days=90))
    with sessions() as session:
        grader = session.scalars(select(Person).where(Person.username == "grader3")).one()
        first_unread = grading.next_case(session, grader)
        assert first_unread is not None, "the generated backlog is missing"

        def run(name: str, call: Callable[[], Any]) -> float:
            figure = _timed(call, repeats if name != "export_month" else max(1, repeats // 3))
            print(f"  {name}: {figure} ms", flush=True)
            session.rollback()
            return figure

        return {
            "worklist": run(
                "worklist", lambda: grading.worklist(session, grader, timedelta(hours=24))
            ),
            "place_in_list": run(
                "place_in_list", lambda: grading.place_in_list(session, grader, first_unread)
            ),
            "triage_sweep": run("triage_sweep", lambda: untriaged_cases(session)),
            "dashboard": run("dashboard", lambda: dashboard.overview(session, {"site-3"})),
            "failsafe_refresh": run("failsafe_refresh", lambda: refresh(session, "site-3", policy)),
            "export_month": run("export_month", lambda: gather(session, month, b"k" * 32)),
        }


def _sizes(engine: Any) -> dict[str, int]:
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
                " WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                " ORDER BY 2 DESC"
            )
        ).all()
        total = db.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return {"database": int(total), **{name: int(size) for name, size in rows[:8]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="1000000,5000000,20000000", help="images per stage")
    parser.add_argument("--server", default="postgresql+psycopg2://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="eyescreen_growth")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    stages = [int(s) for s in args.stages.split(",")]
    admin = create_engine(f"{args.server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as db:
        db.execute(text(f'DROP DATABASE IF EXISTS "{args.database}"'))
        db.execute(text(f'CREATE DATABASE "{args.database}"'))
    url = f"{args.server}/{args.database}"
    results: list[dict[str, Any]] = []
    try:
        upgrade(url)
        engine = create_engine(url)
        sessions = sessionmaker(engine)
        _seed(engine)
        grower = Grower(engine)
        for images in stages:
            cases = images // IMAGES_PER_CASE
            started = time.monotonic()

            def progress(done: int, images: int = images, started: float = started) -> None:
                print(f"generated {done * IMAGES_PER_CASE:,} of {images:,} images "
                      f"({time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip

            grower.grow_to(cases, progress)
            print(f"stage {images:,} images ({time.monotonic() - started:.0f} s to generate)")
            results.append(
                {
                    "images": images,
                    "generate_s": round(time.monotonic() - started, 1),
                    "ms": _queries(sessions, cases, args.repeats),
                    "bytes": _sizes(engine),
                }
            )
        engine.dispose()
    finally:
        if not args.keep:
            with admin.connect() as db:
                db.execute(text(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)'))
    _print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def _print_table(results: list[dict[str, Any]]) -> None:
    base = results[0]
    print(f"\n{'query':<18}" + "".join(f"{r['images'] / 1e6:>10g} M" for r in results))
    for name in base["ms"]:
        cells = []
        for r in results:
            ratio = r["ms"][name] / max(base["ms"][name], 1e-3)
            cells.append(f"{r['ms'][name]:>8.1f} ms ({ratio:.2f}×)")
        print(f"{name:<18}" + "  ".join(cells))
    print(f"{'database':<18}" + "".join(f"{r['bytes']['database'] / 2**30:>10.2f} GiB"
                                        for r in results))  # fmt: skip
    print(f"run of {date.today().isoformat()}")


if __name__ == "__main__":
    main()
