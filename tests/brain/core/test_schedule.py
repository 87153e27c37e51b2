"""The schedule: recurring wall-clock windows, one-offs, blackouts, daylight saving time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brain.core.schedule import current_end, is_open, next_open
from brain.core.window import WEEKDAYS, Schedule

BERLIN = ZoneInfo("Europe/Berlin")


def schedule(**fields: Any) -> Schedule:
    return Schedule.model_validate(fields)


def berlin(year: int, month: int, day: int, hour: int, minute: int, fold: int = 0) -> datetime:
    """A Berlin wall-clock time as a UTC instant (Python never finds an ambiguous local time
    equal to a time in another zone, so tests compare in UTC)."""
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold).astimezone(UTC)


WEEKEND_NIGHTS = schedule(
    timeZone="Europe/Berlin", windows=[{"days": ["Sat"], "start": "22:00", "end": "04:00"}]
)


def test_no_windows_and_no_one_off_is_always_open() -> None:
    always = schedule()
    moment = datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert is_open(always, moment)
    assert next_open(always, moment) == moment
    assert current_end(always, moment) is None


def test_blackout_closes_an_always_open_schedule_and_bounds_it() -> None:
    freeze = schedule(
        blackouts=[{"start": "2025-12-20T00:00:00Z", "end": "2026-01-05T00:00:00+01:00"}]
    )
    before = datetime(2025, 12, 19, 12, tzinfo=UTC)
    inside = datetime(2025, 12, 24, tzinfo=UTC)
    assert is_open(freeze, before)
    assert current_end(freeze, before) == datetime(2025, 12, 20, tzinfo=UTC)
    assert not is_open(freeze, inside)
    assert next_open(freeze, inside) == datetime(2026, 1, 4, 23, tzinfo=UTC)
    assert current_end(freeze, inside) is None


def test_window_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    # 2025-06-07 is a Saturday.
    assert not is_open(WEEKEND_NIGHTS, berlin(2025, 6, 7, 21, 59))
    assert is_open(WEEKEND_NIGHTS, berlin(2025, 6, 7, 22, 0))
    assert is_open(WEEKEND_NIGHTS, berlin(2025, 6, 8, 3, 59))
    assert not is_open(WEEKEND_NIGHTS, berlin(2025, 6, 8, 4, 0))
    # Friday night and Sunday night are not Saturday nights.
    assert not is_open(WEEKEND_NIGHTS, berlin(2025, 6, 6, 23, 0))
    assert not is_open(WEEKEND_NIGHTS, berlin(2025, 6, 8, 23, 0))
    # Saturday early morning belongs to Friday's (absent) opening.
    assert not is_open(WEEKEND_NIGHTS, berlin(2025, 6, 7, 1, 0))


def test_next_open_and_current_end_of_a_weekly_window() -> None:
    wednesday = berlin(2025, 6, 4, 10, 0)
    assert next_open(WEEKEND_NIGHTS, wednesday) == berlin(2025, 6, 7, 22, 0)
    assert current_end(WEEKEND_NIGHTS, wednesday) is None
    saturday_night = berlin(2025, 6, 7, 23, 30)
    assert current_end(WEEKEND_NIGHTS, saturday_night) == berlin(2025, 6, 8, 4, 0)
    assert next_open(WEEKEND_NIGHTS, saturday_night) == saturday_night


def test_results_are_in_utc() -> None:
    result = next_open(WEEKEND_NIGHTS, berlin(2025, 6, 4, 10, 0))
    assert result is not None
    assert result.utcoffset() == timedelta(0)
    assert result == datetime(2025, 6, 7, 20, 0, tzinfo=UTC)


def test_end_equal_to_start_means_24_hours() -> None:
    all_saturday = schedule(
        timeZone="Europe/Berlin", windows=[{"days": ["Sat"], "start": "00:00", "end": "00:00"}]
    )
    assert is_open(all_saturday, berlin(2025, 6, 7, 0, 0))
    assert is_open(all_saturday, berlin(2025, 6, 7, 23, 59))
    assert not is_open(all_saturday, berlin(2025, 6, 8, 0, 0))
    assert current_end(all_saturday, berlin(2025, 6, 7, 8, 0)) == berlin(2025, 6, 8, 0, 0)


def test_one_off_opens_outside_windows_and_blackout_wins_over_both() -> None:
    spec = schedule(
        timeZone="Europe/Berlin",
        windows=[{"start": "01:00", "end": "05:00"}],
        oneOff=[{"start": "2025-06-04T12:00:00Z", "end": "2025-06-04T14:00:00Z"}],
        blackouts=[{"start": "2025-06-05T00:00:00Z", "end": "2025-06-06T00:00:00Z"}],
    )
    assert is_open(spec, datetime(2025, 6, 4, 13, tzinfo=UTC))
    assert not is_open(spec, datetime(2025, 6, 4, 14, tzinfo=UTC))
    assert current_end(spec, datetime(2025, 6, 4, 12, tzinfo=UTC)) == datetime(
        2025, 6, 4, 14, tzinfo=UTC
    )
    # 2025-06-05 02:00 Berlin is inside the daily window and inside the blackout.
    assert not is_open(spec, berlin(2025, 6, 5, 2, 0))
    assert next_open(spec, berlin(2025, 6, 5, 2, 0)) == berlin(2025, 6, 6, 2, 0)
    # A window cut short by a blackout starting inside it.
    assert current_end(spec, berlin(2025, 6, 4, 1, 30)) == berlin(2025, 6, 4, 5, 0)


def test_only_one_offs_in_the_past_never_open_again() -> None:
    spec = schedule(oneOff=[{"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z"}])
    assert not is_open(spec, datetime(2025, 1, 1, tzinfo=UTC))
    assert next_open(spec, datetime(2025, 1, 1, tzinfo=UTC)) is None


def test_far_one_offs_and_blackouts_are_found_beyond_the_horizon() -> None:
    spec = schedule(oneOff=[{"start": "2099-01-01T00:00:00Z", "end": "2099-01-02T00:00:00Z"}])
    assert next_open(spec, datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2099, 1, 1, tzinfo=UTC)
    freeze = schedule(blackouts=[{"start": "2090-01-01T00:00:00Z", "end": "2091-01-01T00:00:00Z"}])
    assert current_end(freeze, datetime(2025, 1, 1, tzinfo=UTC)) == datetime(2090, 1, 1, tzinfo=UTC)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(WEEKEND_NIGHTS, datetime(2025, 6, 7, 23))
    with pytest.raises(ValueError, match="aware"):
        next_open(WEEKEND_NIGHTS, datetime(2025, 6, 7, 23))


# --- Daylight saving time (Europe/Berlin: 2025-03-30 02:00 -> 03:00, 2025-10-26 03:00 -> 02:00).


def daily(start: str, end: str) -> Schedule:
    return schedule(timeZone="Europe/Berlin", windows=[{"start": start, "end": end}])


def test_spring_forward_window_inside_the_skipped_hour_does_not_open_that_night() -> None:
    inside_gap = daily("02:00", "03:00")
    day_before = berlin(2025, 3, 29, 12, 0)
    # Not on 2025-03-30 (the clock never shows 02:xx), next on 2025-03-31 at 02:00.
    assert next_open(inside_gap, day_before) == berlin(2025, 3, 31, 2, 0)
    for minutes in range(0, 24 * 60, 5):
        moment = datetime(2025, 3, 29, 22, tzinfo=UTC) + timedelta(minutes=minutes)
        assert moment.astimezone(BERLIN).day != 30 or not is_open(inside_gap, moment)


def test_spring_forward_window_partly_in_the_gap_is_open_for_the_part_that_shows() -> None:
    ends_in_gap = daily("01:30", "02:30")
    assert is_open(ends_in_gap, berlin(2025, 3, 30, 1, 45))
    # Closes when the clock jumps from 02:00 CET to 03:00 CEST (01:00 UTC): 30 real minutes.
    assert current_end(ends_in_gap, berlin(2025, 3, 30, 1, 45)) == datetime(
        2025, 3, 30, 1, 0, tzinfo=UTC
    )
    starts_in_gap = daily("02:30", "04:00")
    # Opens at the jump, since the clock then shows 03:00, and closes at 04:00 CEST.
    assert next_open(starts_in_gap, berlin(2025, 3, 30, 0, 30)) == datetime(
        2025, 3, 30, 1, 0, tzinfo=UTC
    )
    assert current_end(starts_in_gap, berlin(2025, 3, 30, 3, 15)) == berlin(2025, 3, 30, 4, 0)


def test_fall_back_repeated_hour_is_open_twice() -> None:
    repeated = daily("02:00", "03:00")
    first_pass_start = berlin(2025, 10, 26, 2, 0, fold=0)  # 00:00 UTC
    assert first_pass_start == datetime(2025, 10, 26, 0, 0, tzinfo=UTC)
    assert next_open(repeated, berlin(2025, 10, 25, 12, 0)) == first_pass_start
    # Open through both passes of 02:00-03:00: two real hours, until 03:00 CET (02:00 UTC).
    assert current_end(repeated, first_pass_start) == datetime(2025, 10, 26, 2, 0, tzinfo=UTC)
    assert is_open(repeated, berlin(2025, 10, 26, 2, 30, fold=1))


# --- Property tests: next_open and current_end agree with a brute-force walk over time. --------

GRID = timedelta(minutes=15)
BASE = datetime(2025, 3, 20, tzinfo=UTC)  # around the spring transitions of both hemispheres
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]


def grid_time(step: int) -> str:
    minutes = (step * 15) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def grid_instant(steps: int) -> datetime:
    return BASE + steps * GRID


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """Schedules whose every boundary lies on the 15-minute grid, so a 15-minute walk is exact."""
    windows = [
        {
            "days": draw(st.lists(st.sampled_from(WEEKDAYS), min_size=1, max_size=7, unique=True)),
            "start": grid_time(draw(st.integers(0, 95))),
            "end": grid_time(draw(st.integers(0, 95))),
        }
        for _ in range(draw(st.integers(0, 3)))
    ]

    def spans(max_count: int) -> list[dict[str, str]]:
        result = []
        for _ in range(draw(st.integers(0, max_count))):
            start = draw(st.integers(0, 8 * 96))
            length = draw(st.integers(1, 2 * 96))
            result.append(
                {
                    "start": grid_instant(start).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "end": grid_instant(start + length).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            )
        return result

    return schedule(
        timeZone=draw(st.sampled_from(ZONES)),
        windows=windows,
        oneOff=spans(2),
        blackouts=spans(2),
    )


WALK_STEPS = 12 * 96  # twelve days on the grid


def walk_until(spec: Schedule, start: datetime, want_open: bool) -> datetime | None:
    for step in range(WALK_STEPS + 1):
        moment = start + step * GRID
        if is_open(spec, moment) == want_open:
            return moment
    return None


@settings(max_examples=150, deadline=None)
@given(spec=schedules(), now_step=st.integers(0, 10 * 96))
def test_next_open_is_the_first_open_instant(spec: Schedule, now_step: int) -> None:
    now = grid_instant(now_step)
    expected = walk_until(spec, now, want_open=True)
    result = next_open(spec, now)
    if expected is not None:
        assert result == expected
        assert is_open(spec, result)
    else:
        assert result is None or result > now + WALK_STEPS * GRID


@settings(max_examples=150, deadline=None)
@given(spec=schedules(), now_step=st.integers(0, 10 * 96))
def test_current_end_is_the_first_closed_instant(spec: Schedule, now_step: int) -> None:
    now = grid_instant(now_step)
    result = current_end(spec, now)
    if not is_open(spec, now):
        assert result is None
        return
    expected = walk_until(spec, now, want_open=False)
    if expected is not None:
        assert result == expected
        assert not is_open(spec, result)
    else:
        assert result is None or result > now + WALK_STEPS * GRID


@settings(max_examples=100, deadline=None)
@given(spec=schedules(), moment_step=st.integers(0, 12 * 96), offset=st.integers(0, 899))
def test_blackouts_always_win(spec: Schedule, moment_step: int, offset: int) -> None:
    moment = grid_instant(moment_step) + timedelta(seconds=offset)
    if any(blackout.contains(moment) for blackout in spec.blackouts):
        assert not is_open(spec, moment)
    elif any(span.contains(moment) for span in spec.one_off) or not (spec.windows or spec.one_off):
        assert is_open(spec, moment)
