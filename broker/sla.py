"""The SLA clock of the SERENITE contract (clauses 3-3 and 4-1), in Europe/Paris local time.

* Business day: Monday-Friday that is not a French metropolitan public holiday.
* Hotline: open 08:30-18:30 (end excluded) on business days.
* ``taken_at``: when the hotline takes the call - the report itself if the hotline is open,
  else its next opening.
* Acknowledgement ("prise en charge"): urgent within 15 hotline minutes but never later than the
  medium deadline of the same call, medium the same day (18:30), low on D+2 (18:30 of the second
  business day): for every instant, urgent <= medium <= low.
* Restore ("traitement"): taken before 12:00 -> next business day before 12:00; otherwise the
  second business day before 12:00.

Inputs are aware datetimes in any zone (naive ones are rejected); outputs are aware datetimes in
Europe/Paris. Arithmetic on instants is done in UTC, so DST changes cannot shift a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal, get_args
from zoneinfo import ZoneInfo

import holidays

PARIS = ZoneInfo("Europe/Paris")

Priority = Literal["urgent", "medium", "low"]
PRIORITIES: tuple[str, ...] = get_args(Priority)

HOTLINE_OPENS = time(8, 30)
HOTLINE_CLOSES = time(18, 30)
RESTORE_CUTOFF = time(12, 0)  # "avant 12h" / "après 12h"
RESTORE_AT = time(12, 0)
URGENT_ACK_MINUTES = 15
LOW_ACK_BUSINESS_DAYS = 2  # "J+2"


# --- business days --------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _holidays_of(year: int) -> frozenset[date]:
    """French metropolitan public holidays (no Alsace-Moselle extras) of one year."""
    return frozenset(holidays.France(years=year).keys())


def is_business_day(d: date) -> bool:
    if isinstance(d, datetime):  # a datetime is a date; its local date is what counts
        d = _local(d).date()
    return d.weekday() < 5 and d not in _holidays_of(d.year)


def next_business_day(d: date) -> date:
    """The first business day strictly after ``d``."""
    d += timedelta(days=1)
    while not is_business_day(d):
        d += timedelta(days=1)
    return d


def add_business_days(d: date, n: int) -> date:
    """The ``n``-th business day strictly after ``d`` (``n`` >= 1); ``d`` itself for ``n`` == 0."""
    if n < 0:
        raise ValueError("n must be >= 0")
    for _ in range(n):
        d = next_business_day(d)
    return d


# --- instants -------------------------------------------------------------------------------------
def _local(t: datetime) -> datetime:
    if not isinstance(t, datetime):
        raise TypeError(f"expected a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("naive datetime: give an offset or a time zone")
    return t.astimezone(PARIS)


def _at(d: date, hm: time) -> datetime:
    """Local wall-clock time ``hm`` on ``d`` in Paris (08:30, 12:00, 18:30 always exist)."""
    return datetime.combine(d, hm, tzinfo=PARIS)


def _opening(d: date) -> datetime:
    return _at(d, HOTLINE_OPENS)


def _closing(d: date) -> datetime:
    return _at(d, HOTLINE_CLOSES)


def is_hotline_open(t: datetime) -> bool:
    local = _local(t)
    return is_business_day(local.date()) and HOTLINE_OPENS <= local.time() < HOTLINE_CLOSES


def taken_at(reported_at: datetime) -> datetime:
    """``reported_at`` if the hotline is open then, else the hotline's next opening."""
    local = _local(reported_at)
    day = local.date()
    if is_business_day(day):
        if local.time() < HOTLINE_OPENS:
            return _opening(day)
        if local.time() < HOTLINE_CLOSES:
            return local
    return _opening(next_business_day(day))


def add_hotline_minutes(t: datetime, minutes: int) -> datetime:
    """``t`` moved on by ``minutes`` minutes of open hotline (closed time does not count).

    A ``t`` outside hours starts counting at the next opening. A result that lands exactly on
    closing time stays at 18:30 of that day.
    """
    if minutes < 0:
        raise ValueError("minutes must be >= 0")
    current = taken_at(t)
    remaining = timedelta(minutes=minutes)
    while True:
        day = current.date()
        available = _closing(day).astimezone(UTC) - current.astimezone(UTC)
        if remaining <= available:
            return (current.astimezone(UTC) + remaining).astimezone(PARIS)
        remaining -= available
        current = _opening(next_business_day(day))


# --- deadlines ------------------------------------------------------------------------------------
def ack_deadline(taken: datetime, priority: Priority) -> datetime:
    """Deadline to take charge of the request (clause 3-3).

    ``taken`` outside hotline hours is first moved to the next opening.
    """
    start = taken_at(taken)
    if priority == "urgent":  # a call taken at 18:20 is acknowledged by 18:30, like a medium one
        return min(add_hotline_minutes(start, URGENT_ACK_MINUTES), _closing(start.date()))
    if priority == "medium":
        return _closing(start.date())
    if priority == "low":
        return _closing(add_business_days(start.date(), LOW_ACK_BUSINESS_DAYS))
    raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")


def restore_deadline(taken: datetime) -> datetime:
    """Deadline to put the videoconference service back (clause 4-1).

    Taken before 12:00 -> 12:00 on the next business day; from 12:00 on -> 12:00 on the second
    business day. ``taken`` outside hotline hours is first moved to the next opening.
    """
    start = taken_at(taken)
    days = 1 if start.time() < RESTORE_CUTOFF else 2
    return _at(add_business_days(start.date(), days), RESTORE_AT)


@dataclass(frozen=True)
class SlaTimes:
    reported_at: datetime
    taken_at: datetime
    ack_deadline: datetime
    restore_deadline: datetime


def compute(reported_at: datetime, priority: Priority) -> SlaTimes:
    if priority not in PRIORITIES:
        raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
    reported = _local(reported_at)
    taken = taken_at(reported)
    return SlaTimes(
        reported_at=reported,
        taken_at=taken,
        ack_deadline=ack_deadline(taken, priority),
        restore_deadline=restore_deadline(taken),
    )
