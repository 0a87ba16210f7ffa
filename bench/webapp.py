"""The clinicians' web application under a realistic table size: PostgreSQL holding 100,000
cases (two photographs each), the app served by uvicorn, a grader working through a worklist.

Prints server time (the app's Server-Timing header: routing, database, templates) per page, p50
and p95, as ratios to the log-in page measured in the same run, and the server time of reading a
case (open, grade, submit, next) against the aims: pages p95 < 200 ms, a read < 1 s.

    python bench/webapp.py [--cases 100000] [--reads 20] [--requests 60]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.clinic import PASSWORD, open_clinic, other_read, sign_in
from webapp.app import create_app

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"

FILL = """
INSERT INTO patient (id, patient_id, issuer, name, birth_date, sex, created_at)
  SELECT g, 'B' || g, '', 'Bench^Patient' || g, '19600101', 'F', now()
  FROM generate_series(:first, :last) g;
INSERT INTO study (id, patient_pk, study_instance_uid, study_date, accession_number, created_at)
  SELECT g, g, '2.25.' || g, '20261128', 'A' || g, now() FROM generate_series(:first, :last) g;
INSERT INTO screening_case (id, study_pk, state, referral, opened_at, last_image_at, site, urgent)
  SELECT g, g, 'closed', g % 3 = 0, now() - make_interval(secs => g * 20), now(), 'NORTH',
         g % 997 = 0
  FROM generate_series(:first, :last) g;
INSERT INTO instance (id, case_pk, sop_instance_uid, sop_class_uid, series_instance_uid,
                      transfer_syntax_uid, laterality, route, calling_ae, sha256, size_bytes,
                      state, received_at)
  SELECT 2 * g + e, g, '2.25.9' || (2 * g + e), '1.2.840.10008.5.1.4.1.1.77.1.5.1',
         '2.25.8' || g, '1.2.840.10008.1.2.1', CASE e WHEN 0 THEN 'R' ELSE 'L' END, 'fundus',
         'CAMERA', :sha256, 1000, 'predicted', now()
  FROM generate_series(:first, :last) g, generate_series(0, 1) e;
"""


def fresh_database() -> str:
    name = f"eyescreen_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def server_ms(answer: httpx.Response) -> float:
    return float(answer.headers["server-timing"].split("dur=")[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=20)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    url = fresh_database()
    try:
        run(url, args)
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(
            text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    engine.dispose()


def run(url: str, args: argparse.Namespace) -> None:
    import uvicorn

    with tempfile.TemporaryDirectory() as folder, open_clinic(url, Path(folder)) as clinic:
        print(f"making {args.reads} real cases (the model reads them)...", file=sys.stderr)
        real = [clinic.case(patient_name=f"Real^Case{i}") for i in range(args.reads)]
        with clinic.runtime.sessions() as session:
            sha256 = session.execute(text("SELECT sha256 FROM instance LIMIT 1")).scalar_one()
            session.execute(
                text(
                    "UPDATE screening_case SET opened_at = now() - interval '400 days', "
                    "urgent = false WHERE id = ANY(:ids)"
                ),
                {"ids": real},
            )
            session.commit()
        # Filler ids start above the real cases' ids (the sequences are moved past them).
        offset = max(real) + 1
        print(f"filling {args.cases:,} more cases...", file=sys.stderr)
        fill_offset(url, offset, args.cases, sha256)
        port = free_port()
        app = create_app(clinic.settings, clinic.runtime.sessions)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as grader:
            sign_in(grader, "grace", PASSWORD)
            csrf = grader.get("/dashboard").text.split('name="csrf_token" value="')[1].split('"')[0]
            timings: dict[str, list[float]] = {
                "log-in page (baseline)": [],
                "worklist": [],
                "worklist page 100": [],
                "case page": [],
            }
            rng = random.Random(1)
            for _ in range(args.requests):
                timings["log-in page (baseline)"].append(server_ms(grader.get("/login")))
                timings["worklist"].append(server_ms(grader.get("/worklist")))
                timings["worklist page 100"].append(server_ms(grader.get("/worklist?page=100")))
                case = rng.randint(offset, offset + args.cases - 1)
                timings["case page"].append(server_ms(grader.get(f"/cases/{case}")))
            reading: list[float] = []
            for _ in real:
                spent = 0.0
                answer = grader.get("/cases/next")
                spent += server_ms(answer)
                target = answer.headers["location"]
                page = grader.get(target)
                spent += server_ms(page)
                model = clinic.model(int(target.rsplit("/", 1)[1]))  # None for filler cases
                read = other_read(model) if model else {e: {"codes": []} for e in "RL"}
                form: dict[str, object] = {"csrf_token": csrf, "reading_ms": "3000", "then": "next"}
                for eye, given in read.items():
                    form[f"eye_{eye}_state"] = "findings" if given["codes"] else "normal"
                    form[f"eye_{eye}_code"] = given["codes"]
                submitted = grader.post(f"{target}/read", data=form)
                assert submitted.status_code == 303, submitted.text
                spent += server_ms(submitted)
                reading.append(spent)
        server.should_exit = True
        baseline = percentile(timings["log-in page (baseline)"], 0.95)
        print(f"\n{args.cases:,} filler cases + {args.reads} read, PostgreSQL; server time in ms")
        print("| page | p50 | p95 | p95 ratio to log-in page | aim |")
        print("| --- | ---: | ---: | ---: | --- |")
        for name, values in timings.items():
            p95 = percentile(values, 0.95)
            aim = "" if "baseline" in name else ("met" if p95 < 200 else "NOT met") + " (< 200)"
            print(
                f"| {name} | {statistics.median(values):.1f} | {p95:.1f} | "
                f"{p95 / baseline:.1f} | {aim} |"
            )
        p95 = percentile(reading, 0.95)
        print(
            f"| read a case (next, open, submit) | {statistics.median(reading):.1f} | {p95:.1f} | "
            f"{p95 / baseline:.1f} | {'met' if p95 < 1000 else 'NOT met'} (< 1000) |"
        )


def fill_offset(url: str, offset: int, cases: int, sha256: str) -> None:
    engine = create_engine(url)
    step = 10_000
    for first in range(offset, offset + cases, step):
        last = min(offset + cases - 1, first + step - 1)
        with engine.begin() as conn:
            for statement in FILL.split(";"):
                if statement.strip():
                    conn.execute(text(statement), {"first": first, "last": last, "sha256": sha256})
        print(f"  filled {last - offset + 1:,} / {cases:,} cases", file=sys.stderr, flush=True)
    with engine.begin() as conn:
        for table in ("patient", "study", "screening_case", "instance"):
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        conn.execute(text("ANALYZE"))
    engine.dispose()


def free_port() -> int:
    from bench.common import free_port as port

    return port()


if __name__ == "__main__":
    main()
