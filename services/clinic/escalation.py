"""The panel's rule, as a pure function so that it can be checked for every quorum.

Arbiters vote on the current version of the grader's read. After each vote:

- votes that disagree escalate the case;
- a quorum of agreeing votes decides it;
- agreeing votes short of the quorum, with nobody eligible left to vote, escalate it (the
  quorum can no longer be reached; without this a small panel waits for the timeout);
- otherwise it waits (and the sweeper escalates it after the timeout).

Once escalated, the decision is a separate, final act of a senior arbiter of the site (or of
the senior an admin assigned the case to): open to a senior who already voted, and never
counted against the quorum. So every arbitration with one active senior can be decided."""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    WAITING = "waiting"
    ESCALATED = "escalated"
    DECIDED = "decided"


def after_vote(agreeing: int, voted: int, quorum: int, voters_left: int) -> Step:
    """What follows a vote: ``agreeing`` votes equal to the newest one out of ``voted`` on this
    read version, and ``voters_left`` panel members who may still vote on it."""
    if agreeing < voted:
        return Step.ESCALATED
    if agreeing >= quorum:
        return Step.DECIDED
    if voters_left == 0:
        return Step.ESCALATED
    return Step.WAITING
