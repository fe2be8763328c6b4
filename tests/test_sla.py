"""The SLA clock: worked examples from the contract, DST nights, holidays, and properties."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import sla

PARIS = ZoneInfo("Europe/Paris")


def p(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=PARIS)


# --- business days --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (date(2026, 7, 14), False),  # Bastille day, Tuesday
        (date(2026, 5, 1), False),  # 1 May, Friday
        (date(2026, 5, 14), False),  # Ascension
        (date(2027, 3, 29), False),  # Easter Monday 2027
        (date(2026, 5, 25), False),  # Whit Monday
        (date(2026, 12, 25), False),
        (date(2027, 1, 1), False),
        (date(2026, 4, 3), True),  # Good Friday: only Alsace-Moselle
        (date(2026, 12, 26), False),  # Saturday (St Stephen: Alsace-Moselle only anyway)
        (date(2026, 12, 28), True),
        (date(2026, 10, 24), False),  # Saturday
        (date(2026, 10, 26), True),
    ],
)
def test_is_business_day(d: date, expected: bool) -> None:
    assert sla.is_business_day(d) is expected


def test_next_and_add_business_days() -> None:
    assert sla.next_business_day(date(2026, 7, 13)) == date(2026, 7, 15)  # over 14 July
    assert sla.next_business_day(date(2026, 12, 24)) == date(2026, 12, 28)
    assert sla.next_business_day(date(2026, 12, 31)) == date(2027, 1, 4)  # New Year Fri + weekend
    assert sla.add_business_days(date(2027, 3, 26), 1) == date(2027, 3, 30)  # Easter Monday
    assert sla.add_business_days(date(2027, 3, 26), 2) == date(2027, 3, 31)
    assert sla.add_business_days(date(2026, 5, 13), 2) == date(2026, 5, 18)  # Ascension + weekend
    with pytest.raises(ValueError):
        sla.add_business_days(date(2026, 1, 5), -1)


# --- hotline --------------------------------------------------------------------------------------
def test_hotline_hours() -> None:
    assert not sla.is_hotline_open(p(2026, 3, 2, 8, 29))
    assert sla.is_hotline_open(p(2026, 3, 2, 8, 30))
    assert sla.is_hotline_open(p(2026, 3, 2, 18, 29))
    assert not sla.is_hotline_open(p(2026, 3, 2, 18, 30))
    assert not sla.is_hotline_open(p(2026, 3, 7, 10))  # Saturday
    assert not sla.is_hotline_open(p(2026, 7, 14, 10))


def test_naive_rejected() -> None:
    naive = datetime(2026, 3, 2, 10)
    for fn in (sla.is_hotline_open, sla.taken_at, sla.restore_deadline):
        with pytest.raises(ValueError):
            fn(naive)
    with pytest.raises(ValueError):
        sla.compute(naive, "urgent")
    with pytest.raises(ValueError):
        sla.compute(p(2026, 3, 2, 10), "critical")  # type: ignore[arg-type]


def test_taken_at() -> None:
    assert sla.taken_at(p(2026, 3, 2, 10, 5)) == p(2026, 3, 2, 10, 5)
    assert sla.taken_at(p(2026, 3, 2, 7)) == p(2026, 3, 2, 8, 30)  # before opening, same day
    assert sla.taken_at(p(2026, 3, 6, 19)) == p(2026, 3, 9, 8, 30)  # Friday evening -> Monday
    assert sla.taken_at(p(2026, 3, 7, 12)) == p(2026, 3, 9, 8, 30)  # weekend
    assert sla.taken_at(p(2026, 7, 14, 9)) == p(2026, 7, 15, 8, 30)


# --- worked examples --------------------------------------------------------------------------------
def test_friday_before_and_at_noon() -> None:
    a = sla.compute(p(2026, 3, 6, 11, 59), "medium")
    assert a.taken_at == p(2026, 3, 6, 11, 59)
    assert a.restore_deadline == p(2026, 3, 9, 12)  # Monday
    assert a.ack_deadline == p(2026, 3, 6, 18, 30)
    b = sla.compute(p(2026, 3, 6, 12, 0), "medium")
    assert b.restore_deadline == p(2026, 3, 10, 12)  # Tuesday


def test_friday_evening_and_weekend() -> None:
    s = sla.compute(p(2026, 3, 6, 18, 45), "urgent")
    assert s.taken_at == p(2026, 3, 9, 8, 30)
    assert s.ack_deadline == p(2026, 3, 9, 8, 45)
    assert s.restore_deadline == p(2026, 3, 10, 12)  # taken Monday morning -> Tuesday noon
    w = sla.compute(p(2026, 3, 8, 15), "low")
    assert w.taken_at == p(2026, 3, 9, 8, 30)
    assert w.ack_deadline == p(2026, 3, 11, 18, 30)  # D+2


def test_holidays_in_the_way() -> None:
    # 14 July 2026 is a Tuesday: Monday afternoon -> Wednesday is 1st, Thursday 2nd.
    assert sla.compute(p(2026, 7, 13, 14), "medium").restore_deadline == p(2026, 7, 16, 12)
    assert sla.compute(p(2026, 7, 13, 10), "medium").restore_deadline == p(2026, 7, 15, 12)
    # 1 May 2026 is a Friday: Thursday morning -> Monday 4 May.
    assert sla.compute(p(2026, 4, 30, 10), "urgent").restore_deadline == p(2026, 5, 4, 12)
    assert sla.compute(p(2026, 4, 30, 10), "low").ack_deadline == p(2026, 5, 5, 18, 30)
    # Ascension 2026 (Thursday 14 May): Wednesday afternoon -> Friday 15, Monday 18.
    assert sla.compute(p(2026, 5, 13, 15), "medium").restore_deadline == p(2026, 5, 18, 12)
    # Easter Monday 2027 (29 March), right after the DST night: Friday afternoon -> Wed 31.
    s = sla.compute(p(2027, 3, 26, 15), "medium")
    assert s.restore_deadline == p(2027, 3, 31, 12)
    assert s.restore_deadline.utcoffset() == timedelta(hours=2)
    # Christmas / New Year: 24 Dec 2026 (Thu) afternoon -> Mon 28, Tue 29.
    assert sla.compute(p(2026, 12, 24, 16), "medium").restore_deadline == p(2026, 12, 29, 12)
    # 31 Dec 2026 (Thu) morning -> 1 Jan is a holiday -> Monday 4 Jan 2027.
    assert sla.compute(p(2026, 12, 31, 9), "medium").restore_deadline == p(2027, 1, 4, 12)
    # Reported on Christmas day -> taken Monday 28 at 08:30.
    assert sla.compute(p(2026, 12, 25, 10), "urgent").taken_at == p(2026, 12, 28, 8, 30)


def test_dst_nights() -> None:
    # 2026-10-25: CEST -> CET. Friday 23 at 10:00 (+02:00) -> Monday 26 at 12:00 (+01:00).
    s = sla.compute(p(2026, 10, 23, 10), "urgent")
    assert s.restore_deadline == p(2026, 10, 26, 12)
    assert s.restore_deadline.time() == time(12, 0)
    assert s.restore_deadline.utcoffset() == timedelta(hours=1)
    assert s.restore_deadline.astimezone(UTC) == datetime(2026, 10, 26, 11, tzinfo=UTC)
    # Reported during the repeated hour of that night (both folds) -> Monday 08:30 +01:00.
    for fold in (0, 1):
        t = datetime(2026, 10, 25, 2, 30, fold=fold, tzinfo=PARIS)
        assert sla.taken_at(t) == p(2026, 10, 26, 8, 30)
    # 2027-03-28: CET -> CEST. Friday 26 at 11:00 (+01:00) -> Tuesday 30 (after Easter Monday) 12:00 +02:00.
    s = sla.compute(p(2027, 3, 26, 11), "urgent")
    assert s.restore_deadline == p(2027, 3, 30, 12)
    assert s.restore_deadline.utcoffset() == timedelta(hours=2)
    assert s.restore_deadline.astimezone(UTC) == datetime(2027, 3, 30, 10, tzinfo=UTC)


def test_urgent_near_closing_is_never_later_than_medium() -> None:
    # A call taken at 18:20 is acknowledged by 18:30, as a medium one would be (not 08:35 next day).
    s = sla.compute(p(2026, 3, 2, 18, 20), "urgent")
    assert s.ack_deadline == p(2026, 3, 2, 18, 30) == sla.compute(p(2026, 3, 2, 18, 20), "medium").ack_deadline
    assert sla.compute(p(2026, 3, 6, 18, 20), "urgent").ack_deadline == p(2026, 3, 6, 18, 30)  # Friday
    assert sla.compute(p(2026, 3, 2, 18, 15), "urgent").ack_deadline == p(2026, 3, 2, 18, 30)
    assert sla.compute(p(2026, 3, 2, 18, 14), "urgent").ack_deadline == p(2026, 3, 2, 18, 29)
    # reported after closing: taken at the next opening, 15 minutes from there
    assert sla.compute(p(2026, 3, 6, 18, 40), "urgent").ack_deadline == p(2026, 3, 9, 8, 45)
    assert sla.add_hotline_minutes(p(2026, 3, 2, 9), 600 + 30) == p(2026, 3, 3, 9, 30)
    assert sla.add_hotline_minutes(p(2026, 3, 7, 9), 0) == p(2026, 3, 9, 8, 30)


def test_other_offsets() -> None:
    # 2026-03-06 10:59Z is 11:59 in Paris (CET); 12:00 Paris = 11:00Z.
    before = sla.compute(datetime(2026, 3, 6, 10, 59, tzinfo=UTC), "medium")
    assert before.reported_at.tzinfo == PARIS or str(before.reported_at.tzinfo) == "Europe/Paris"
    assert before.reported_at == p(2026, 3, 6, 11, 59)
    assert before.restore_deadline == p(2026, 3, 9, 12)
    assert sla.compute(datetime(2026, 3, 6, 11, 0, tzinfo=UTC), "medium").restore_deadline == p(
        2026, 3, 10, 12
    )
    # +09:00: Friday 19:59 in Tokyo is Friday 11:59 in Paris.
    tokyo = timezone(timedelta(hours=9))
    s = sla.compute(datetime(2026, 3, 6, 19, 59, tzinfo=tokyo), "urgent")
    assert s.taken_at == p(2026, 3, 6, 11, 59)
    assert s.ack_deadline == p(2026, 3, 6, 12, 14)
    assert s.restore_deadline == p(2026, 3, 9, 12)
    # Monday 08:00 in Tokyo is Monday 00:00 in Paris: before opening -> 08:30 the same day.
    assert sla.compute(datetime(2026, 3, 9, 8, 0, tzinfo=tokyo), "low").taken_at == p(2026, 3, 9, 8, 30)
    for v in (s.reported_at, s.taken_at, s.ack_deadline, s.restore_deadline):
        assert v.tzinfo is not None and v.utcoffset() == timedelta(hours=1)


# --- properties -----------------------------------------------------------------------------------
instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
priorities = st.sampled_from(["urgent", "medium", "low"])
PROPS = settings(max_examples=150, deadline=None)


def hotline_minutes_between(a: datetime, b: datetime) -> float:
    """Open hotline minutes in [a, b), walking day by day (independent of add_hotline_minutes)."""
    total = 0.0
    d = a.astimezone(PARIS).date()
    while d <= b.astimezone(PARIS).date():
        if sla.is_business_day(d):
            lo = max(a, datetime.combine(d, time(8, 30), tzinfo=PARIS))
            hi = min(b, datetime.combine(d, time(18, 30), tzinfo=PARIS))
            if hi > lo:
                total += (hi - lo).total_seconds() / 60
        d += timedelta(days=1)
    return total


@PROPS
@given(instants, priorities)
def test_properties(reported: datetime, priority: sla.Priority) -> None:
    s = sla.compute(reported, priority)
    assert s.taken_at >= reported
    assert sla.is_hotline_open(s.taken_at)
    if sla.is_hotline_open(reported):
        assert s.taken_at == reported
    r = s.restore_deadline
    assert str(r.tzinfo) == "Europe/Paris"
    assert r.time() == time(12, 0)
    assert sla.is_business_day(r.date())
    taken_day = s.taken_at.date()
    assert r.date() > taken_day
    assert sla.add_business_days(taken_day, 1) <= r.date() <= sla.add_business_days(taken_day, 2)
    assert s.ack_deadline >= s.taken_at
    if priority == "urgent":
        closing = datetime.combine(s.taken_at.date(), time(18, 30), tzinfo=PARIS)
        assert hotline_minutes_between(s.taken_at, s.ack_deadline) == pytest.approx(
            min(15, (closing - s.taken_at).total_seconds() / 60))


@PROPS
@given(instants)
def test_urgent_is_never_later_than_medium_nor_medium_than_low(reported: datetime) -> None:
    urgent, medium, low = (sla.compute(reported, p).ack_deadline for p in ("urgent", "medium", "low"))  # type: ignore[arg-type]
    assert urgent <= medium <= low


def _calendar_days() -> list[date]:
    """Every French public holiday of 2026-2028, the days around them and every DST change day."""
    days: set[date] = set()
    for year in (2026, 2027, 2028):
        for h in holidays.France(years=year):
            days.update(h + timedelta(days=d) for d in (-1, 0, 1))
        for month in (3, 10):  # the last Sundays of March and October
            last = date(year, month, 31)
            while last.weekday() != 6:
                last -= timedelta(days=1)
            days.update(last + timedelta(days=d) for d in (-2, -1, 0, 1))
    return sorted(days)


@pytest.mark.parametrize("day", _calendar_days(), ids=str)
def test_every_holiday_and_dst_day_of_2026_to_2028(day: date) -> None:
    """Clauses 3-3 and 4-1 on the days where calendars go wrong, at the hours where rules change."""
    for hm in (time(0, 0), time(8, 29), time(8, 30), time(11, 59), time(12, 0), time(18, 14), time(18, 20),
               time(18, 30), time(23, 59)):
        reported = datetime.combine(day, hm, tzinfo=PARIS)
        times = {p: sla.compute(reported, p) for p in ("urgent", "medium", "low")}  # type: ignore[arg-type]
        s = times["urgent"]
        assert sla.is_hotline_open(s.taken_at) and sla.is_business_day(s.taken_at.date())
        assert s.taken_at.date() not in holidays.France(years=s.taken_at.year)
        assert times["urgent"].ack_deadline <= times["medium"].ack_deadline <= times["low"].ack_deadline
        assert times["medium"].ack_deadline == datetime.combine(s.taken_at.date(), time(18, 30), tzinfo=PARIS)
        low_day = sla.add_business_days(s.taken_at.date(), 2)
        assert times["low"].ack_deadline == datetime.combine(low_day, time(18, 30), tzinfo=PARIS)
        r = s.restore_deadline
        days = 1 if s.taken_at.time() < time(12, 0) else 2
        assert r == datetime.combine(sla.add_business_days(s.taken_at.date(), days), time(12, 0), tzinfo=PARIS)
        assert sla.is_business_day(r.date()) and r.utcoffset() in (timedelta(hours=1), timedelta(hours=2))


@PROPS
@given(instants, st.integers(min_value=1, max_value=4 * 24 * 60))
def test_monotonic_restore(reported: datetime, later_by_minutes: int) -> None:
    later = reported + timedelta(minutes=later_by_minutes)
    assert sla.compute(later, "urgent").restore_deadline >= sla.compute(reported, "urgent").restore_deadline


@PROPS
@given(instants, st.integers(min_value=0, max_value=2000))
def test_add_hotline_minutes_counts_open_minutes(t: datetime, minutes: int) -> None:
    end = sla.add_hotline_minutes(t, minutes)
    start = sla.taken_at(t)
    assert end >= start
    assert hotline_minutes_between(start, end) == pytest.approx(minutes)
