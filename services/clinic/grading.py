"""Graders' reads of a visit: what may be recorded, what follows from it by rule, leases that
keep two graders off one case, the worklist, and reads arriving from other tools (CSV, API).

A read holds, per eye, the level-2 codes seen, or nothing (normal), or "ungradable" with a
reason. Level-1 codes and the referral are derived here, never typed: a code implies its
ancestors, and an eye with a finding or an ungradable photograph is referred."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.orm import Session

from services.clinic.dr_grading import DrGradeError, check_grade, scheme_named
from services.db.base import utcnow
from services.db.models import (
    CaseRead,
    DeliveryState,
    Instance,
    InstanceState,
    Person,
    ReadSource,
    Report,
    ReportDelivery,
    Role,
    ScreeningCase,
    Study,
)
from services.taxonomy.tree import ROUTES, Taxonomy, TaxonomyError, load_taxonomy, route_of_code

EYES = ("R", "L", "U")  # right, left, laterality not given
READERS = (Role.GRADER, Role.ARBITER, Role.SENIOR_ARBITER)


class ReadError(ValueError):
    """A read that cannot be recorded as given (the message says why)."""


def eye_of(laterality: str) -> str:
    return laterality if laterality in ("R", "L") else "U"


@dataclass(frozen=True)
class Finding:
    """A level-2 class a grader may record."""

    code: str
    name: str
    parent_name: str
    route: str


def gradable_findings(routes: Iterable[str] = ROUTES) -> list[Finding]:
    """The non-normal deepest-level classes of the routes' taxonomies, in file order: the
    numbered choices on the grading form."""
    found = []
    for route in routes:
        taxonomy = load_taxonomy(route)
        for node in taxonomy.level(taxonomy.depth):
            if not node.normal and node.parent is not None:
                parent = taxonomy.node(node.parent).name
                found.append(Finding(node.code, node.name, parent, route))
    return found


def _taxonomy_of(code: str) -> Taxonomy:
    try:
        return load_taxonomy(route_of_code(code))
    except TaxonomyError as exc:
        raise ReadError(f"unknown finding code {code!r}") from exc


def case_eyes(session: Session, case_id: int) -> dict[str, list[str]]:
    """The eyes a case has photographs of, and the routes photographed for each."""
    eyes: dict[str, list[str]] = {}
    for laterality, route in session.execute(
        select(Instance.laterality, Instance.route).where(Instance.case_pk == case_id).distinct()
    ):
        routes = eyes.setdefault(eye_of(laterality), [])
        if route not in routes:
            routes.append(route)
    return {eye: eyes[eye] for eye in EYES if eye in eyes}


def normalise(
    eyes_given: Mapping[str, Any],
    eyes_present: Mapping[str, list[str]],
    dr_scheme: str | None = None,
) -> dict[str, Any]:
    """Check a read against the case's eyes and the taxonomy (and the site's DR grading
    scheme, if it uses one); returns its canonical form."""
    missing = [eye for eye in eyes_present if eye not in eyes_given]
    if missing:
        raise ReadError(f"no read for eye(s) {', '.join(missing)}")
    extra = [eye for eye in eyes_given if eye not in eyes_present]
    if extra:
        raise ReadError(f"the case has no photograph of eye(s) {', '.join(extra)}")
    allowed = {f.code: f for f in gradable_findings()}
    canonical: dict[str, Any] = {}
    for eye, given in eyes_given.items():
        codes = sorted(set(given.get("codes") or []))
        ungradable = (given.get("ungradable") or "").strip() or None
        unknown = [c for c in codes if c not in allowed]
        if unknown:
            raise ReadError(f"eye {eye}: not a level-2 finding: {', '.join(unknown)}")
        off_route = [c for c in codes if allowed[c].route not in eyes_present[eye]]
        if off_route:
            raise ReadError(
                f"eye {eye}: no photograph of the kind that shows {', '.join(off_route)}"
            )
        if ungradable and codes:
            raise ReadError(f"eye {eye}: ungradable, yet findings recorded")
        canonical[eye] = {"codes": codes, "ungradable": ungradable}
        try:
            dr = check_grade(scheme_named(dr_scheme), given.get("dr"))
        except DrGradeError as exc:
            raise ReadError(f"eye {eye}: {exc}") from exc
        if dr is not None and ungradable:
            raise ReadError(f"eye {eye}: ungradable, yet a DR grade recorded")
        if dr is not None:
            canonical[eye]["dr"] = dr
    return canonical


STATES = ("normal", "findings", "ungradable")


def as_entered(eyes_given: Mapping[str, Any]) -> dict[str, Any]:
    """A read whose every eye was stated on purpose: normal, findings (at least one), or
    ungradable with a reason. Used where an eye left blank must not pass as normal (the
    panel's own decision); each eye's ``state`` is what the person chose."""
    entered: dict[str, Any] = {}
    for eye, given in eyes_given.items():
        state = given.get("state") or ""
        codes = list(given.get("codes") or [])
        reason = (given.get("ungradable") or "").strip()
        if state not in STATES:
            raise ReadError(f"eye {eye}: nothing entered (normal, findings or ungradable)")
        if state == "findings" and not codes:
            raise ReadError(f"eye {eye}: findings chosen, but none ticked")
        if state == "ungradable" and not reason:
            raise ReadError(f"eye {eye}: ungradable needs a reason")
        if state == "normal" and codes:
            raise ReadError(f"eye {eye}: normal, yet findings ticked")
        entered[eye] = {
            "codes": codes if state == "findings" else [],
            "ungradable": reason if state == "ungradable" else None,
        }
    return entered


def derive(eyes: Mapping[str, Any]) -> tuple[dict[str, list[str]], bool]:
    """Every code each eye implies (ancestors included) and the referral that follows."""
    findings: dict[str, list[str]] = {}
    refer = False
    for eye, read in eyes.items():
        codes: set[str] = set()
        for code in read["codes"]:
            codes |= _taxonomy_of(code).with_ancestors([code])
        findings[eye] = sorted(codes)
        refer = refer or bool(codes) or bool(read["ungradable"])
    return findings, refer


def latest_read(session: Session, case_id: int, grader_pk: int | None = None) -> CaseRead | None:
    """The newest version of a case's read (by one grader, or by anyone)."""
    query = select(CaseRead).where(CaseRead.case_pk == case_id)
    if grader_pk is not None:
        query = query.where(CaseRead.grader_pk == grader_pk)
    return session.scalar(query.order_by(CaseRead.id.desc()))


def _open_to(person: Person, now: datetime) -> ColumnElement[bool]:
    """A case this person may hold: nobody's, theirs already, or its lease has run out."""
    return or_(
        ScreeningCase.leased_to_pk.is_(None),
        ScreeningCase.leased_to_pk == person.id,
        ScreeningCase.lease_until < now,
    )


def lease(session: Session, case_id: int, person: Person, minutes: float) -> bool:
    """Hold the case for this grader; False while another grader holds it. One UPDATE with
    the condition in it, so two graders opening the case at once cannot both win."""
    now = utcnow()
    taken = session.execute(
        update(ScreeningCase)
        .where(ScreeningCase.id == case_id, _open_to(person, now))
        .values(leased_to_pk=person.id, lease_until=now + timedelta(minutes=minutes))
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount)  # type: ignore[attr-defined]


def release(session: Session, case_id: int, person: Person) -> None:
    session.execute(
        update(ScreeningCase)
        .where(ScreeningCase.id == case_id, ScreeningCase.leased_to_pk == person.id)
        .values(leased_to_pk=None, lease_until=None)
        .execution_options(synchronize_session=False)
    )


def submit_read(
    session: Session,
    case: ScreeningCase,
    grader: Person,
    eyes_given: Mapping[str, Any],
    reading_ms: int | None,
    source: ReadSource = ReadSource.WEB,
    amend_reason: str = "",
    blinded: bool | None = None,
    dr_scheme: str | None = None,
) -> CaseRead:
    """Record a grader's read. A second read of the same case by the same grader is an
    amendment: a new version, which needs a reason; earlier versions stay as they were."""
    if grader.role not in READERS or not grader.active:
        raise ReadError(f"{grader.username} may not grade")
    if case.site not in grader.site_names:
        raise ReadError("not a case of your sites")
    eyes = normalise(eyes_given, case_eyes(session, case.id), dr_scheme)
    findings, referral = derive(eyes)
    previous = latest_read(session, case.id, grader.id)
    if previous is not None and not amend_reason.strip():
        raise ReadError("this case is already read by you: an amendment needs a reason")
    read = CaseRead(
        case_pk=case.id,
        grader_pk=grader.id,
        version=(previous.version + 1) if previous else 1,
        eyes=eyes,
        findings=findings,
        referral=referral,
        reading_ms=reading_ms,
        source=source,
        amends_pk=previous.id if previous else None,
        amend_reason=amend_reason.strip() if previous else "",
        blinded=blinded,
    )
    session.add(read)
    if case.graded_at is None:
        case.graded_at = utcnow()
    release(session, case.id, grader)
    session.flush()
    return read


@dataclass(frozen=True)
class WorkItem:
    case_id: int
    urgent: bool
    opened_at: Any
    images: int
    overdue: bool
    leased_by_other: bool


def worklist(
    session: Session, person: Person, turnaround: timedelta, limit: int = 50, offset: int = 0
) -> tuple[list[WorkItem], dict[str, int]]:
    """Consecutive unread cases of the person's sites, urgent first then oldest, with counts."""
    now = utcnow()
    unread = and_(ScreeningCase.site.in_(person.site_names), ScreeningCase.graded_at.is_(None))
    images = (
        select(func.count(Instance.id))
        .where(Instance.case_pk == ScreeningCase.id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(
            ScreeningCase.id,
            ScreeningCase.urgent,
            ScreeningCase.opened_at,
            images,
            _open_to(person, now),
        )
        .where(unread)
        .order_by(ScreeningCase.urgent.desc(), ScreeningCase.opened_at, ScreeningCase.id)
        .limit(limit)
        .offset(offset)
    ).all()
    items = [
        WorkItem(
            case_id=row[0],
            urgent=row[1],
            opened_at=row[2],
            images=row[3],
            overdue=now - row[2] > turnaround,
            leased_by_other=row[4] is not None and not row[4],  # NULL: no lease either way
        )
        for row in rows
    ]
    late = ScreeningCase.opened_at < now - turnaround
    waiting, overdue = session.execute(
        select(func.count(), func.count().filter(late)).select_from(ScreeningCase).where(unread)
    ).one()
    return items, {"waiting": waiting, "overdue": overdue}


def next_case(session: Session, person: Person, after_case: int | None = None) -> int | None:
    """The next unread case of the person's sites not held by someone else (J / K, Next)."""
    now = utcnow()
    query = (
        select(ScreeningCase.id)
        .where(
            ScreeningCase.site.in_(person.site_names),
            ScreeningCase.graded_at.is_(None),
            _open_to(person, now),
        )
        .order_by(ScreeningCase.urgent.desc(), ScreeningCase.opened_at, ScreeningCase.id)
    )
    if after_case is not None:
        query = query.where(ScreeningCase.id != after_case)
    return session.scalar(query.limit(1))


PLACE_CAP = 1000  # counted no further: "case 3 of 1000+" says enough, and costs little


def place_in_list(session: Session, person: Person, case_id: int) -> tuple[int, int] | None:
    """(n, N): the case is the n-th of the N unread cases of the person's sites, in worklist
    order (urgent first, then oldest); None once it is read. Each count stops at
    ``PLACE_CAP`` + 1 rows, so a backlog of 100,000 costs no more than one of 1,000."""
    case = session.get(ScreeningCase, case_id)
    if case is None or case.graded_at is not None or case.site not in person.site_names:
        return None
    unread = and_(ScreeningCase.site.in_(person.site_names), ScreeningCase.graded_at.is_(None))
    same_urgency_earlier = and_(
        ScreeningCase.urgent == case.urgent,
        or_(
            ScreeningCase.opened_at < case.opened_at,
            and_(ScreeningCase.opened_at == case.opened_at, ScreeningCase.id < case.id),
        ),
    )
    ahead = ScreeningCase.urgent.is_(True) if not case.urgent else false()

    def capped(*where: ColumnElement[bool]) -> int:
        rows = select(ScreeningCase.id).where(unread, *where).limit(PLACE_CAP + 1).subquery()
        return int(session.scalar(select(func.count()).select_from(rows)) or 0)

    return capped(or_(ahead, same_urgency_earlier)) + 1, capped()


def stuck_cases(session: Session, sites: set[str], older_than: timedelta) -> list[tuple[int, str]]:
    """The failsafe list: cases of these sites stuck at a step longer than they should be.
    Starts from the (few, indexed) instances in a waiting or failed state, not from the cases."""
    cutoff = utcnow() - older_than
    stuck: list[tuple[int, str]] = []
    for state, why, timed in (
        (InstanceState.RECEIVED, "waiting for the model", True),
        (InstanceState.FAILED, "an image could not be read by the model", False),
    ):
        query = (
            select(Instance.case_pk)
            .join(ScreeningCase, ScreeningCase.id == Instance.case_pk)
            .where(Instance.state == state, ScreeningCase.site.in_(sites))
            .distinct()
            .limit(100)
        )
        if timed:
            query = query.where(Instance.received_at < cutoff)
        stuck += [(case_id, why) for case_id in session.scalars(query)]
    dead = (
        select(Report.case_pk)
        .join(ReportDelivery, ReportDelivery.report_pk == Report.id)
        .join(ScreeningCase, ScreeningCase.id == Report.case_pk)
        .where(ReportDelivery.state == DeliveryState.DEAD, ScreeningCase.site.in_(sites))
        .distinct()
        .limit(100)
    )
    stuck += [
        (case_id, "its report could not be delivered to the PACS")
        for case_id in session.scalars(dead)
    ]
    return stuck


class ImportFailed(ValueError):
    """A CSV that was not imported; every bad line is named, nothing was kept."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


CSV_COLUMNS = ("study_instance_uid", "grader", "eye", "codes", "ungradable_reason")


def import_csv(session: Session, text: str, allowed_sites: set[str]) -> list[CaseRead]:
    """Reads from another tool, one row per eye. All lines are checked first; any problem
    refuses the whole file, naming each bad line, so nothing is half-imported."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or set(CSV_COLUMNS) - set(reader.fieldnames):
        raise ImportFailed([f"line 1: the header needs the columns {', '.join(CSV_COLUMNS)}"])
    reads: dict[tuple[str, str], dict[str, Any]] = {}
    first_line: dict[tuple[str, str], int] = {}
    problems: list[str] = []
    for row in reader:
        line = reader.line_num
        eye = (row["eye"] or "").strip().upper()
        if eye not in EYES:
            problems.append(f"line {line}: eye must be R, L or U, not {row['eye']!r}")
            continue
        key = ((row["study_instance_uid"] or "").strip(), (row["grader"] or "").strip())
        codes = [c.strip() for c in (row["codes"] or "").split(";") if c.strip()]
        eyes = reads.setdefault(key, {})
        first_line.setdefault(key, line)
        if eye in eyes:
            problems.append(f"line {line}: eye {eye} given twice for this study and grader")
        eyes[eye] = {"codes": codes, "ungradable": (row["ungradable_reason"] or "").strip()}
    done: list[CaseRead] = []
    for (study_uid, username), eyes in reads.items():
        line = first_line[(study_uid, username)]
        case = session.scalar(
            select(ScreeningCase).join(Study).where(Study.study_instance_uid == study_uid)
        )
        grader = session.scalar(select(Person).where(Person.username == username))
        if case is None or case.site not in allowed_sites:
            problems.append(f"line {line}: no case with study {study_uid!r} at your sites")
            continue
        if grader is None:
            problems.append(f"line {line}: no user {username!r}")
            continue
        try:
            with session.begin_nested():
                done.append(submit_read(session, case, grader, eyes, None, ReadSource.CSV))
        except ReadError as exc:
            problems.append(f"line {line}: {exc}")
    if problems:
        raise ImportFailed(problems)
    return done
