"""Figures for the dashboard: today's cases, what waits at each step, referral and ungradable
rates, deliveries, and each grader's quality against the final reference and their peers."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    CaseRead,
    DeliveryState,
    Instance,
    InstanceState,
    OutboxMessage,
    Person,
    Prediction,
    ReportDelivery,
    ScreeningCase,
)
from services.statistics.paired import cohen_kappa as statistics_kappa

RATE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Step:
    name: str
    waiting: int
    oldest: datetime | None


# Delivered (the C-STORE succeeded), commitment asked, no result yet.
UNCOMMITTED = and_(
    ReportDelivery.state == DeliveryState.DELIVERED,
    ReportDelivery.commitment_requested_at.is_not(None),
    ReportDelivery.committed_at.is_(None),
)


def overview(session: Session, sites: set[str]) -> dict[str, Any]:
    today = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    of_sites = ScreeningCase.site.in_(sites)
    cases_today = session.scalar(
        select(func.count())
        .select_from(ScreeningCase)
        .where(of_sites, ScreeningCase.opened_at >= today)
    )
    # The rates of the recent visits only: what monitoring needs, and a cost that does not
    # grow with the archive (bench/growth.py).
    recent = and_(of_sites, ScreeningCase.opened_at >= utcnow() - RATE_WINDOW)
    referred, decided = session.execute(
        select(
            func.count().filter(ScreeningCase.referral.is_(True)),
            func.count(ScreeningCase.referral),
        ).where(recent)
    ).one()
    graded = session.scalars(select(CaseRead.eyes).join(ScreeningCase).where(recent))
    eyes = [eye for read in graded for eye in read.values()]
    steps = [
        _step(
            session,
            "waiting for the model",
            select(func.count(Instance.id), func.min(Instance.received_at))
            .join(ScreeningCase)
            .where(of_sites, Instance.state == InstanceState.RECEIVED),
        ),
        _step(
            session,
            "waiting for a grader",
            select(func.count(ScreeningCase.id), func.min(ScreeningCase.opened_at)).where(
                of_sites, ScreeningCase.graded_at.is_(None)
            ),
        ),
        _step(
            session,
            "waiting for the panel",
            select(func.count(ArbitrationCase.id), func.min(ArbitrationCase.opened_at))
            .join(ScreeningCase)
            .where(of_sites, ArbitrationCase.state == ArbitrationState.OPEN),
        ),
        _step(
            session,
            "reports waiting for the PACS",
            select(func.count(ReportDelivery.id), func.min(ReportDelivery.next_attempt_at)).where(
                ReportDelivery.state == DeliveryState.PENDING
            ),
        ),
        _step(
            session,
            "reports stored, not yet committed by the PACS",
            select(
                func.count(ReportDelivery.id), func.min(ReportDelivery.commitment_requested_at)
            ).where(UNCOMMITTED),
        ),
    ]
    dead = session.execute(
        select(ReportDelivery.id, ReportDelivery.destination, ReportDelivery.last_error)
        .where(ReportDelivery.state == DeliveryState.DEAD)
        .order_by(ReportDelivery.id.desc())
        .limit(50)
    ).all()
    return {
        "health": health(session),
        "cases_today": cases_today or 0,
        "referral_rate": referred / decided if decided else None,
        "rate_window_days": RATE_WINDOW.days,
        "ungradable_rate": sum(bool(e["ungradable"]) for e in eyes) / len(eyes) if eyes else None,
        "steps": steps,
        "dead_letters": dead,
    }


@dataclass(frozen=True)
class Health:
    """Signs of life of each part: the gateway receives, the workers read, the outbox drains."""

    last_image: datetime | None
    last_prediction: datetime | None
    outbox_waiting: int
    outbox_oldest: datetime | None
    deliveries_pending: int
    deliveries_dead: int
    deliveries_uncommitted: int = 0  # stored at the PACS, its commitment result not yet in


def health(session: Session) -> Health:
    waiting, oldest = session.execute(
        select(func.count(OutboxMessage.id), func.min(OutboxMessage.created_at)).where(
            OutboxMessage.sent_at.is_(None)
        )
    ).one()
    # Only the few undelivered rows are counted (by the state index), never the archive; the
    # newest row by primary key stands for the latest time (rows are written in time order).
    unfinished = (DeliveryState.PENDING, DeliveryState.DEAD)
    states = dict(
        session.execute(
            select(ReportDelivery.state, func.count())
            .where(ReportDelivery.state.in_(unfinished))
            .group_by(ReportDelivery.state)
        ).all()
    )
    return Health(
        last_image=session.scalar(
            select(Instance.received_at).order_by(Instance.id.desc()).limit(1)
        ),
        last_prediction=session.scalar(
            select(Prediction.created_at).order_by(Prediction.id.desc()).limit(1)
        ),
        outbox_waiting=waiting or 0,
        outbox_oldest=oldest,
        deliveries_pending=states.get(DeliveryState.PENDING, 0),
        deliveries_dead=states.get(DeliveryState.DEAD, 0),
        deliveries_uncommitted=session.scalar(
            select(func.count(ReportDelivery.id)).where(UNCOMMITTED)
        )
        or 0,
    )


def _step(session: Session, name: str, query: Any) -> Step:
    count, oldest = session.execute(query).one()
    return Step(name, count or 0, oldest)


@dataclass(frozen=True)
class GraderQuality:
    label: str
    reads: int
    median_reading_s: float | None
    sensitivity: float | None  # referral, against the panel's final decision
    specificity: float | None
    verified: int
    kappa_with_peers: float | None


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two raters' yes/no answers on the same cases (None when undefined:
    no cases, or no variation); the study statistics' kappa on the 2x2 table."""
    table = [[0, 0], [0, 0]]
    for a, b in pairs:
        table[int(a)][int(b)] += 1
    kappa = statistics_kappa(table).kappa
    return None if math.isnan(kappa) else kappa


def grader_quality(
    session: Session,
    sites: set[str],
    viewer: Person,
    named: bool,
    since: timedelta = timedelta(days=365),
) -> list[GraderQuality]:
    """Per grader: volume, reading time, referral sensitivity and specificity against the
    panel's decision where there is one, and kappa with other graders of the same cases.
    Graders see others as "Grader 1, 2, ..." and themselves as "you"; admins see names."""
    reads = session.execute(
        select(CaseRead, Person.username)
        .join(Person, Person.id == CaseRead.grader_pk)
        .join(ScreeningCase, ScreeningCase.id == CaseRead.case_pk)
        .where(ScreeningCase.site.in_(sites), CaseRead.created_at >= utcnow() - since)
        .order_by(CaseRead.id)
    ).all()
    latest: dict[tuple[int, int], CaseRead] = {}
    names: dict[int, str] = {}
    for read, username in reads:
        latest[(read.case_pk, read.grader_pk)] = read
        names[read.grader_pk] = username
    reference = dict(
        session.execute(
            select(ArbitrationDecision.case_pk, ArbitrationDecision.referral).order_by(
                ArbitrationDecision.id
            )
        ).all()
    )
    by_case: dict[int, dict[int, bool]] = defaultdict(dict)
    for (case_pk, grader_pk), read in latest.items():
        by_case[case_pk][grader_pk] = read.referral
    result = []
    for number, grader_pk in enumerate(sorted(names), start=1):
        mine = [r for (_, g), r in latest.items() if g == grader_pk]
        times = [r.reading_ms / 1000 for r in mine if r.reading_ms]
        verified = [(r.referral, reference[r.case_pk]) for r in mine if r.case_pk in reference]
        positives = [said for said, truth in verified if truth]
        negatives = [said for said, truth in verified if not truth]
        pairs = [
            (reads_of_case[grader_pk], other)
            for reads_of_case in by_case.values()
            if grader_pk in reads_of_case
            for peer, other in reads_of_case.items()
            if peer != grader_pk
        ]
        label = (
            names[grader_pk] if named else ("you" if grader_pk == viewer.id else f"Grader {number}")
        )
        result.append(
            GraderQuality(
                label=label,
                reads=len(mine),
                median_reading_s=statistics.median(times) if times else None,
                sensitivity=sum(positives) / len(positives) if positives else None,
                specificity=(len(negatives) - sum(negatives)) / len(negatives)
                if negatives
                else None,
                verified=len(verified),
                kappa_with_peers=cohen_kappa(pairs),
            )
        )
    return result
