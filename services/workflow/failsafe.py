"""The failsafe list: per site and day, every patient who may have fallen through the
workflow, kept until a person closes the item with a reason.

Concerns (``FailsafeKind``): expected but never imaged; images the MPPS named that never
arrived; acquisition discontinued; imaged but not read by the model, or by a grader, within
the turnaround; referred with no outcome recorded (the outcome is the reason the item is
closed with); a report to a destination (PACS or record) dead or still pending past the
turnaround. ``refresh`` adds an item the first time a concern is seen and marks it resolved
(not closed) when the concern clears: only a person closes an item, and a closed item is
never raised again. ``day_summary`` answers "expected N, imaged N, resulted N, delivered N".
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import (
    ArbitrationDecision,
    DeliveryState,
    ExpectedVisit,
    FailsafeItem,
    FailsafeKind,
    Instance,
    InstanceState,
    PerformedStep,
    Prediction,
    Report,
    ReportDelivery,
    ScreeningCase,
    StepStatus,
)
from services.kernel.settings import Settings
from services.workflow.visits import case_day, cases_of_day, match_visits

log = logging.getLogger(__name__)

WINDOW = timedelta(days=60)  # cases, steps and visits older than this are not looked at again


class FailsafeError(Exception):
    """A failsafe item cannot be closed as asked (no reason, closed already, not yours)."""


@dataclass(frozen=True)
class FailsafePolicy:
    """How long each step may take before its patient is on the list."""

    turnaround: timedelta
    not_imaged_after: timedelta
    referral_outcome_after: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> FailsafePolicy:
        return cls(
            timedelta(hours=settings.turnaround_hours),
            timedelta(hours=settings.failsafe_not_imaged_after_hours),
            timedelta(days=settings.referral_outcome_days),
        )


@dataclass(frozen=True)
class Concern:
    kind: FailsafeKind
    subject: str
    day: str
    detail: str
    visit_pk: int | None = None
    case_pk: int | None = None


def _local_day(moment: datetime) -> str:
    return moment.astimezone().strftime("%Y%m%d")


def scheduled_at(visit: ExpectedVisit) -> datetime:
    """When the visit was due, in the clinic's local time (the end of its day if untimed)."""
    day = datetime.strptime(visit.scheduled_date, "%Y%m%d")
    digits = "".join(c for c in visit.scheduled_time.split(".")[0] if c.isdigit())
    at = time(int(digits[:2]) % 24, int(digits[2:4]) % 60) if len(digits) >= 4 else time(23, 59)
    return datetime.combine(day.date(), at).astimezone()


def _visit_concerns(
    session: Session, site: str, policy: FailsafePolicy, now: datetime
) -> Iterator[Concern]:
    since = _local_day(now - WINDOW)
    for visit in session.scalars(
        select(ExpectedVisit).where(
            ExpectedVisit.site == site,
            ExpectedVisit.case_pk.is_(None),
            ExpectedVisit.scheduled_date >= since,
        )
    ):
        if scheduled_at(visit) + policy.not_imaged_after < now:
            yield Concern(
                FailsafeKind.NOT_IMAGED,
                f"visit:{visit.id}",
                visit.scheduled_date,
                f"scheduled {visit.scheduled_time[:4] or 'that day'} at "
                f"{visit.station_ae or 'any station'}; no study arrived",
                visit_pk=visit.id,
            )


def _step_concerns(session: Session, site: str, now: datetime) -> Iterator[Concern]:
    for step in session.scalars(
        select(PerformedStep).where(
            PerformedStep.status != StepStatus.IN_PROGRESS, PerformedStep.ended_at >= now - WINDOW
        )
    ):
        case = session.get(ScreeningCase, step.case_pk) if step.case_pk else None
        if case is not None and case.site != site:
            continue
        day = case_day(case) if case else _local_day(step.created_at)
        if step.status == StepStatus.DISCONTINUED:
            yield Concern(
                FailsafeKind.DISCONTINUED,
                f"step:{step.id}",
                day,
                f"acquisition discontinued: {step.discontinued_reason or 'no reason given'}",
                case_pk=step.case_pk,
            )
        elif step.missing:
            yield Concern(
                FailsafeKind.MISSING_IMAGES,
                f"step:{step.id}",
                day,
                f"{len(step.missing)} image(s) the camera reported never arrived: "
                + ", ".join(step.missing[:5]),
                case_pk=step.case_pk,
            )


def _referred(session: Session, case_ids: Collection[int]) -> set[int]:
    """The cases referred: by the panel's latest decision where there is one, else by any
    image the model referred (a failsafe errs on the side of listing)."""
    decided: dict[int, bool] = {}
    for case_id, referral in session.execute(
        select(ArbitrationDecision.case_pk, ArbitrationDecision.referral)
        .where(ArbitrationDecision.case_pk.in_(case_ids))
        .order_by(ArbitrationDecision.id)
    ):
        decided[case_id] = bool(referral)
    by_model = set(
        session.scalars(
            select(Instance.case_pk)
            .join(Prediction, Prediction.instance_pk == Instance.id)
            .where(Instance.case_pk.in_(case_ids), Prediction.referral.is_(True))
            .distinct()
        )
    )
    return {c for c in case_ids if decided.get(c, c in by_model)}


def _case_concerns(
    session: Session, site: str, policy: FailsafePolicy, now: datetime
) -> Iterator[Concern]:
    """Set-based: a handful of queries per sweep, however many cases the window holds."""
    late, since = now - policy.turnaround, now - WINDOW
    of_site = (ScreeningCase.site == site, ScreeningCase.opened_at >= since)
    unread = dict(
        session.execute(
            select(Instance.case_pk, func.count())
            .join(ScreeningCase, ScreeningCase.id == Instance.case_pk)
            .where(*of_site)
            .where(
                Instance.state.in_([InstanceState.RECEIVED, InstanceState.FAILED]),
                Instance.received_at < late,
            )
            .group_by(Instance.case_pk)
        ).all()
    )
    ungraded = set(
        session.scalars(
            select(ScreeningCase.id).where(
                *of_site, ScreeningCase.graded_at.is_(None), ScreeningCase.opened_at < late
            )
        )
    )
    ended = func.coalesce(ScreeningCase.closed_at, ScreeningCase.last_image_at)
    due = list(
        session.scalars(
            select(ScreeningCase.id).where(*of_site, ended < now - policy.referral_outcome_after)
        )
    )
    referred = _referred(session, due) if due else set()
    for case_id in sorted(set(unread) | ungraded | referred):
        case = session.get_one(ScreeningCase, case_id)
        day, subject = case_day(case), f"case:{case_id}"
        if case_id in unread:
            yield Concern(
                FailsafeKind.NOT_READ_BY_MODEL,
                subject,
                day,
                f"{unread[case_id]} image(s) not read by the model within the turnaround",
                case_pk=case_id,
            )
        if case_id in ungraded:
            yield Concern(
                FailsafeKind.NOT_GRADED,
                subject,
                day,
                "no grader's read within the turnaround",
                case_pk=case_id,
            )
        if case_id in referred:
            yield Concern(
                FailsafeKind.REFERRAL_NO_OUTCOME,
                subject,
                day,
                "referred: record the outcome (attended, declined, ...) as the reason",
                case_pk=case_id,
            )


def _delivery_concerns(
    session: Session, site: str, policy: FailsafePolicy, now: datetime
) -> Iterator[Concern]:
    rows = session.execute(
        select(ReportDelivery, Report.case_pk, Report.created_at)
        .join(Report, Report.id == ReportDelivery.report_pk)
        .join(ScreeningCase, ScreeningCase.id == Report.case_pk)
        .where(
            ScreeningCase.site == site,
            ReportDelivery.state != DeliveryState.DELIVERED,
            Report.created_at >= now - WINDOW,
        )
    )
    for delivery, case_id, built in rows:
        dead = delivery.state == DeliveryState.DEAD
        if dead or built < now - policy.turnaround:
            case = session.get_one(ScreeningCase, case_id)
            yield Concern(
                FailsafeKind.NOT_DELIVERED,
                f"delivery:{delivery.id}",
                case_day(case),
                f"{delivery.channel} report to {delivery.destination} "
                f"{'dead-lettered' if dead else 'still pending'} after {delivery.attempts} "
                f"attempt(s): {(delivery.last_error or '')[:200]}",
                case_pk=case_id,
            )


def _commitment_concerns(
    session: Session, site: str, policy: FailsafePolicy, now: datetime
) -> Iterator[Concern]:
    """Reports the PACS took (C-STORE success) whose Storage Commitment it has not confirmed
    within the turnaround: stored is not yet kept."""
    rows = session.execute(
        select(ReportDelivery, Report.case_pk)
        .join(Report, Report.id == ReportDelivery.report_pk)
        .join(ScreeningCase, ScreeningCase.id == Report.case_pk)
        .where(
            ScreeningCase.site == site,
            ReportDelivery.state == DeliveryState.DELIVERED,
            ReportDelivery.commitment_requested_at.is_not(None),
            ReportDelivery.commitment_requested_at < now - policy.turnaround,
            ReportDelivery.committed_at.is_(None),
            Report.created_at >= now - WINDOW,
        )
    )
    for delivery, case_id in rows:
        case = session.get_one(ScreeningCase, case_id)
        yield Concern(
            FailsafeKind.NOT_COMMITTED,
            f"commitment:{delivery.id}",
            case_day(case),
            f"report stored at {delivery.destination}, its Storage Commitment unanswered since "
            f"{delivery.commitment_requested_at:%Y-%m-%d %H:%M} UTC",
            case_pk=case_id,
        )


def concerns(
    session: Session, site: str, policy: FailsafePolicy, now: datetime | None = None
) -> list[Concern]:
    """Everything wrong at a site now, one concern per (kind, subject)."""
    now = now or utcnow()
    return [
        *_visit_concerns(session, site, policy, now),
        *_step_concerns(session, site, now),
        *_case_concerns(session, site, policy, now),
        *_delivery_concerns(session, site, policy, now),
        *_commitment_concerns(session, site, policy, now),
    ]


def refresh(
    session: Session, site: str, policy: FailsafePolicy, now: datetime | None = None
) -> int:
    """Match visits, then bring the site's list up to date; returns how many items are new."""
    now = now or utcnow()
    match_visits(session, site)
    found = {(c.kind, c.subject): c for c in concerns(session, site, policy, now)}
    recent = FailsafeItem.closed_at.is_(None) | (FailsafeItem.opened_at >= now - 2 * WINDOW)
    known = {
        (item.kind, item.subject): item
        for item in session.scalars(select(FailsafeItem).where(FailsafeItem.site == site, recent))
    }
    new = 0
    for key, concern in found.items():
        item = known.get(key)
        if item is None:
            session.add(
                FailsafeItem(
                    site=site,
                    day=concern.day,
                    kind=concern.kind,
                    subject=concern.subject,
                    visit_pk=concern.visit_pk,
                    case_pk=concern.case_pk,
                    detail=concern.detail,
                    opened_at=now,
                )
            )
            new += 1
        elif item.closed_at is None:
            item.resolved_at, item.detail = None, concern.detail
    for key, item in known.items():
        if key not in found and item.closed_at is None and item.resolved_at is None:
            item.resolved_at = now
    session.flush()
    if new:
        log.warning("failsafe: %d new item(s) at site %r", new, site)
    return new


def items(
    session: Session, sites: Collection[str], day: str | None = None, closed: bool = False
) -> list[FailsafeItem]:
    """The items of the sites (of a day), open ones or all, oldest day first."""
    query = select(FailsafeItem).where(FailsafeItem.site.in_(sites))
    if day:
        query = query.where(FailsafeItem.day == day)
    if not closed:
        query = query.where(FailsafeItem.closed_at.is_(None))
    return list(session.scalars(query.order_by(FailsafeItem.day, FailsafeItem.id)))


def open_counts(session: Session, sites: Collection[str]) -> dict[str, int]:
    """Open items per kind (every kind present, zero when none): the dashboard's figures."""
    counts = dict.fromkeys((k.value for k in FailsafeKind), 0)
    for kind, n in session.execute(
        select(FailsafeItem.kind, func.count())
        .where(FailsafeItem.site.in_(sites), FailsafeItem.closed_at.is_(None))
        .group_by(FailsafeItem.kind)
    ):
        counts[str(kind)] = int(n)
    return counts


def close_item(
    session: Session, item_id: int, person_pk: int | None, reason: str, sites: Iterable[str]
) -> FailsafeItem:
    """Close an item with a reason (the caller audits it); refuses without a reason, twice,
    or for another site's item."""
    reason = reason.strip()
    item = session.get(FailsafeItem, item_id)
    if item is None or item.site not in set(sites):
        raise FailsafeError(f"no failsafe item {item_id} at your sites")
    if not reason:
        raise FailsafeError("closing a failsafe item needs a reason (e.g. the outcome)")
    if item.closed_at is not None:
        raise FailsafeError(f"failsafe item {item_id} is already closed")
    item.closed_at, item.closed_by_pk, item.close_reason = utcnow(), person_pk, reason[:2000]
    return item


@dataclass(frozen=True)
class DaySummary:
    """A site's day: expected (worklist), imaged (studies, of which expected ones and walk-ins),
    resulted (a report built), delivered (the latest report at every destination), and the
    failsafe items still open for the day."""

    site: str
    day: str
    expected: int
    imaged: int
    expected_imaged: int
    unexpected: int
    resulted: int
    delivered: int
    open_items: int

    def sentence(self) -> str:
        return (
            f"{self.site or 'site'} {self.day}: expected {self.expected}, imaged {self.imaged} "
            f"({self.expected_imaged} expected, {self.unexpected} not on the worklist), "
            f"resulted {self.resulted}, delivered {self.delivered}; "
            f"{self.open_items} failsafe item(s) open"
        )


def _delivered(session: Session, case_id: int) -> bool:
    latest = session.scalar(
        select(Report.id).where(Report.case_pk == case_id).order_by(Report.id.desc())
    )
    if latest is None:
        return False
    states = list(
        session.scalars(select(ReportDelivery.state).where(ReportDelivery.report_pk == latest))
    )
    return bool(states) and all(s == DeliveryState.DELIVERED for s in states)


def day_summary(session: Session, site: str, day: str) -> DaySummary:
    visits = list(
        session.scalars(
            select(ExpectedVisit).where(
                ExpectedVisit.site == site, ExpectedVisit.scheduled_date == day
            )
        )
    )
    cases = cases_of_day(session, site, day)
    matched = {
        v.case_pk
        for v in session.scalars(
            select(ExpectedVisit).where(
                ExpectedVisit.site == site, ExpectedVisit.case_pk.is_not(None)
            )
        )
    }
    reported = set(
        session.scalars(
            select(Report.case_pk).where(Report.case_pk.in_([c.id for c in cases])).distinct()
        )
    )
    return DaySummary(
        site=site,
        day=day,
        expected=len(visits),
        imaged=len(cases),
        expected_imaged=sum(1 for v in visits if v.case_pk is not None),
        unexpected=sum(1 for c in cases if c.id not in matched),
        resulted=len(reported),
        delivered=sum(1 for c in cases if c.id in reported and _delivered(session, c.id)),
        open_items=len(items(session, [site], day)),
    )
