"""When a window's schedule is open: pure functions on aware datetimes.

The rule, chosen so a person can predict it from a clock on the wall:

- A recurring window is open exactly while the local wall clock (in `schedule.timeZone`) shows a
  time from `start` (included) to `end` (excluded) on one of its days (and, with `monthly`
  rules, on a local date that is one of their days of the month: the 2nd Tuesday, the last
  Sunday, the 15th). An end at or before the
  start crosses midnight and belongs to the day it starts on (Fri 22:00-04:00 is open Friday
  night until Saturday 04:00); an end equal to the start means 24 hours.
- Daylight saving time follows from that rule. On a spring-forward night the skipped hour never
  shows on the clock, so a window lying entirely inside it (02:00-03:00 in Europe/Berlin on the
  last Sunday of March) does not open that night, and a window partly inside it is open for the
  part that shows (01:30-02:30 is open 30 real minutes, until the clock jumps from 02:00 to
  03:00). On a fall-back night the repeated hour shows twice, so 02:00-03:00 is open for two real
  hours.
- `oneOff` spans are open from start (included) to end (excluded), in absolute time.
- No `windows` and no `oneOff` means always open.
- `blackouts` always win: nothing is open inside a blackout.

Openness only changes at a finite set of instants (window starts and ends on the wall clock,
daylight-saving transitions, one-off and blackout bounds), so next_open and current_end walk
those candidate instants in order instead of stepping through time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from brain.core.window import RecurringWindow, Schedule

# How far next_open / current_end look ahead before answering None.
DEFAULT_HORIZON: Final = timedelta(days=400)
_CHUNK: Final = timedelta(days=7)
# Steps at which the UTC offset is sampled to find daylight-saving transitions.
_OFFSET_SAMPLE_STEP: Final = timedelta(hours=3)


def _require_aware(moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"schedule functions need an aware datetime, got naive {moment!r}")


def _recurring_window_open(window: RecurringWindow, wall_clock: datetime) -> bool:
    """Whether the wall clock reading (naive local time) is inside the recurring window."""
    today = wall_clock.date()
    time_of_day = wall_clock.time()
    if window.start < window.end:
        return window.opens_on(today) and window.start <= time_of_day < window.end
    # Crosses midnight (or lasts 24 hours when end == start).
    return (window.opens_on(today) and time_of_day >= window.start) or (
        window.opens_on(today - timedelta(days=1)) and time_of_day < window.end
    )


def is_open(schedule: Schedule, now: datetime) -> bool:
    """Whether the schedule is open at the instant `now` (aware)."""
    _require_aware(now)
    if any(blackout.contains(now) for blackout in schedule.blackouts):
        return False
    if not schedule.windows and not schedule.one_off:
        return True
    if any(span.contains(now) for span in schedule.one_off):
        return True
    wall_clock = now.astimezone(schedule.zone).replace(tzinfo=None)
    return any(_recurring_window_open(window, wall_clock) for window in schedule.windows)


def _offset_transitions(zone: ZoneInfo, after: datetime, until: datetime) -> Iterator[datetime]:
    """Instants in (after, until] where the zone's UTC offset changes, to the second."""
    earlier = after.replace(microsecond=0)
    while earlier < until:
        later = earlier + _OFFSET_SAMPLE_STEP
        if earlier.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            low, high = earlier, later
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if middle.astimezone(zone).utcoffset() == low.astimezone(zone).utcoffset():
                    low = middle
                else:
                    high = middle
            if after < high <= until:
                yield high
        earlier = later


def _wall_clock_instants(zone: ZoneInfo, day: date, moment: time) -> set[datetime]:
    """The instants at which the wall clock shows `moment` on `day`: none in a gap, two in a
    repeated hour. Both folds are returned; extra candidates are harmless, missing ones not."""
    naive = datetime.combine(day, moment)
    return {naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}


def _candidates(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Sorted instants in (after, until] at which openness may change."""
    zone = schedule.zone
    found: set[datetime] = set()
    for span in (*schedule.one_off, *schedule.blackouts):
        found.update((span.start.astimezone(UTC), span.end.astimezone(UTC)))
    if schedule.windows:
        first_day = after.astimezone(zone).date() - timedelta(days=1)
        last_day = until.astimezone(zone).date() + timedelta(days=1)
        day = first_day
        while day <= last_day:
            for window in schedule.windows:
                found.update(_wall_clock_instants(zone, day, window.start))
                found.update(_wall_clock_instants(zone, day, window.end))
            day += timedelta(days=1)
        found.update(_offset_transitions(zone, after, until))
    return sorted(moment for moment in found if after < moment <= until)


def _first_candidate_where(
    schedule: Schedule, now: datetime, want_open: bool, horizon: timedelta
) -> datetime | None:
    chunk_start = now.astimezone(UTC)
    if not schedule.windows:
        # Only absolute spans: their bounds are every candidate there is, however far away.
        bounds = _candidates(schedule, chunk_start, datetime.max.replace(tzinfo=UTC))
        return next((c for c in bounds if is_open(schedule, c) == want_open), None)
    limit = chunk_start + horizon
    while chunk_start < limit:
        chunk_end = min(chunk_start + _CHUNK, limit)
        for candidate in _candidates(schedule, chunk_start, chunk_end):
            if is_open(schedule, candidate) == want_open:
                return candidate
        chunk_start = chunk_end
    return None


def next_open(
    schedule: Schedule, now: datetime, horizon: timedelta = DEFAULT_HORIZON
) -> datetime | None:
    """`now` (in UTC) if open, else the first instant the schedule opens, or None if it does not
    open within `horizon` (which only limits recurring windows: one-offs are found however far
    away they are)."""
    _require_aware(now)
    if is_open(schedule, now):
        return now.astimezone(UTC)
    return _first_candidate_where(schedule, now, want_open=True, horizon=horizon)


def current_end(
    schedule: Schedule, now: datetime, horizon: timedelta = DEFAULT_HORIZON
) -> datetime | None:
    """When the opening containing `now` closes (in UTC); None if closed now, or if it stays open
    for all of `horizon` (an always-open schedule without blackouts)."""
    _require_aware(now)
    if not is_open(schedule, now):
        return None
    return _first_candidate_where(schedule, now, want_open=False, horizon=horizon)


def upcoming_openings(
    schedule: Schedule, now: datetime, count: int = 3, horizon: timedelta = DEFAULT_HORIZON
) -> list[tuple[datetime, datetime | None]]:
    """The next `count` openings after `now` (the current one excluded): (start, end) in UTC."""
    _require_aware(now)
    found: list[tuple[datetime, datetime | None]] = []
    moment = current_end(schedule, now, horizon) if is_open(schedule, now) else now
    limit = now.astimezone(UTC) + horizon
    while moment is not None and len(found) < count and moment < limit:
        start = next_open(schedule, moment, limit - moment)
        if start is None:
            break
        end = current_end(schedule, start, limit - start)
        found.append((start, end))
        moment = end
    return found
