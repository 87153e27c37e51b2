"""Monthly rules (the nth weekday, a day of the month) with the schedule's wall-clock semantics:
examples, and property tests over several years against an independent day-of-month count."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from brain.core.schedule import current_end, is_open, next_open, upcoming_openings
from brain.core.window import WEEKDAYS, Schedule

BERLIN = ZoneInfo("Europe/Berlin")
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Sydney"]
GRID = timedelta(minutes=15)


def schedule(time_zone: str = "Europe/Berlin", **window: Any) -> Schedule:
    return Schedule.model_validate({"timeZone": time_zone, "windows": [window]})


def berlin(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


PATCH_TUESDAY = schedule(monthly=[{"weekday": "Tue", "nth": 2}], start="22:00", end="04:00")


def test_patch_tuesday_opens_on_the_second_tuesday_night_only() -> None:
    # January 2026: Tuesdays are the 6th, 13th, 20th, 27th.
    assert not is_open(PATCH_TUESDAY, berlin(2026, 1, 6, 23))
    assert is_open(PATCH_TUESDAY, berlin(2026, 1, 13, 22))
    assert is_open(PATCH_TUESDAY, berlin(2026, 1, 14, 3, 59))  # the night belongs to Tuesday
    assert not is_open(PATCH_TUESDAY, berlin(2026, 1, 14, 4))
    assert not is_open(PATCH_TUESDAY, berlin(2026, 1, 20, 23))
    assert next_open(PATCH_TUESDAY, berlin(2026, 1, 1, 0)) == berlin(2026, 1, 13, 22)
    assert current_end(PATCH_TUESDAY, berlin(2026, 1, 13, 23)) == berlin(2026, 1, 14, 4)
    assert upcoming_openings(PATCH_TUESDAY, berlin(2026, 1, 13, 23), count=3) == [
        (berlin(2026, 2, 10, 22), berlin(2026, 2, 11, 4)),
        (berlin(2026, 3, 10, 22), berlin(2026, 3, 11, 4)),
        (berlin(2026, 4, 14, 22), berlin(2026, 4, 15, 4)),
    ]


def test_the_last_sunday_inside_the_skipped_hour_does_not_open_that_month() -> None:
    # Berlin springs forward at 02:00 on the last Sunday of March (2026-03-29): a 02:00-03:00
    # window on the last Sunday never shows on the clock in March, and opens in April.
    last_sunday = schedule(monthly=[{"weekday": "Sun", "nth": -1}], start="02:00", end="03:00")
    assert next_open(last_sunday, berlin(2026, 3, 1, 0)) == berlin(2026, 4, 26, 2)


def test_the_last_day_of_the_month_and_a_day_some_months_lack() -> None:
    last_day = schedule(monthly=[{"dayOfMonth": -1}], start="12:00", end="13:00")
    assert next_open(last_day, berlin(2028, 2, 1, 0)) == berlin(2028, 2, 29, 12)  # leap year
    the_31st = schedule(monthly=[{"dayOfMonth": 31}], start="12:00", end="13:00")
    assert next_open(the_31st, berlin(2026, 4, 1, 0)) == berlin(2026, 5, 31, 12)


def test_days_and_monthly_rules_both_apply() -> None:
    # The 15th, but only on a weekday: 2026-02-15 is a Sunday, 2026-04-15 a Wednesday.
    weekday_15th = schedule(
        days=["Mon", "Tue", "Wed", "Thu", "Fri"],
        monthly=[{"dayOfMonth": 15}],
        start="12:00",
        end="13:00",
    )
    assert next_open(weekday_15th, berlin(2026, 2, 1, 0)) == berlin(2026, 4, 15, 12)


# --- Properties over several years. --------------------------------------------------------


def is_rule_day(day: date, rule: dict[str, Any]) -> bool:
    """The rule checked by counting days of the month, independently of the model's code."""
    days_in_month = calendar.monthrange(day.year, day.month)[1]
    if "dayOfMonth" in rule:
        wanted = rule["dayOfMonth"]
        return day.day == (wanted if wanted > 0 else days_in_month + 1 + wanted)
    weekday = WEEKDAYS.index(rule["weekday"])
    same = [
        d for d in range(1, days_in_month + 1) if date(day.year, day.month, d).weekday() == weekday
    ]
    nth = rule["nth"]
    index = nth - 1 if nth > 0 else len(same) + nth
    return 0 <= index < len(same) and same[index] == day.day


@st.composite
def monthly_windows(draw: st.DrawFn) -> tuple[Schedule, dict[str, Any], str, str]:
    if draw(st.booleans()):
        rule: dict[str, Any] = {
            "weekday": draw(st.sampled_from(WEEKDAYS)),
            "nth": draw(st.sampled_from([1, 2, 3, 4, -1, -2])),
        }
    else:
        rule = {"dayOfMonth": draw(st.sampled_from([1, 2, 13, 15, 28, 30, -1, -2]))}
    start = draw(st.integers(0, 95)) * 15
    length = draw(st.integers(1, 96)) * 15  # up to 24 hours, often across midnight
    end = (start + length) % (24 * 60)
    start_text = f"{start // 60:02d}:{start % 60:02d}"
    end_text = f"{end // 60:02d}:{end % 60:02d}"
    spec = schedule(draw(st.sampled_from(ZONES)), monthly=[rule], start=start_text, end=end_text)
    return spec, rule, start_text, end_text


def opening_day_matches(
    spec: Schedule, rule: dict[str, Any], start: str, end: str, moment: datetime
) -> bool:
    """Some local day the opening at `moment` may belong to is a day of the rule."""
    local = moment.astimezone(spec.zone)
    clock = local.strftime("%H:%M")
    crosses = end <= start
    days = []
    if clock >= start and (crosses or clock < end):
        days.append(local.date())
    if crosses and clock < end:
        days.append(local.date() - timedelta(days=1))
    return any(is_rule_day(day, rule) for day in days)


MOMENTS = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2031, 12, 31)).map(
    lambda moment: moment.replace(
        second=0, microsecond=0, minute=moment.minute // 15 * 15, tzinfo=UTC
    )
)


@settings(max_examples=300, deadline=None)
@given(window=monthly_windows(), moment=MOMENTS)
def test_open_only_on_a_day_of_the_rule_in_local_time(
    window: tuple[Schedule, dict[str, Any], str, str], moment: datetime
) -> None:
    spec, rule, start, end = window
    if is_open(spec, moment):
        assert opening_day_matches(spec, rule, start, end, moment)


@settings(max_examples=40, deadline=None)
@given(window=monthly_windows(), moment=MOMENTS)
def test_next_opening_is_the_first_open_instant_and_consistent_with_is_open(
    window: tuple[Schedule, dict[str, Any], str, str], moment: datetime
) -> None:
    spec, rule, start, end = window
    opening = next_open(spec, moment)
    assert opening is not None  # every rule here has a day in every 2 months at most
    assert is_open(spec, opening) and opening >= moment
    assert opening_day_matches(spec, rule, start, end, opening)
    # Nothing is open on the 15-minute grid before it (every boundary lies on that grid).
    step = moment
    while step < opening:
        assert not is_open(spec, step), step
        step += GRID
    closing = current_end(spec, opening)
    assert closing is not None and closing > opening
    assert not is_open(spec, closing) and is_open(spec, closing - GRID)


@settings(max_examples=200, deadline=None)
@given(window=monthly_windows(), year=st.integers(2025, 2031), month=st.integers(1, 12))
def test_every_day_of_a_month_opens_exactly_when_it_is_a_day_of_the_rule(
    window: tuple[Schedule, dict[str, Any], str, str], year: int, month: int
) -> None:
    spec, rule, _start, _end = window
    for day in range(1, calendar.monthrange(year, month)[1] + 1):
        local = date(year, month, day)
        assert spec.windows[0].opens_on(local) == is_rule_day(local, rule), local
