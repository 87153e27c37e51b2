"""Datetime arithmetic that saturates instead of overflowing.

Durations come from windows (`delayBetweenNodes`, timeouts) and moments from the lock; a huge
duration stored by an older CRD, or a far-future moment in the lock, must not raise
`OverflowError` in a pass: the result is the latest (or earliest) representable moment, i.e.
"never" (or "always") for every comparison the brain makes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

LATEST = datetime.max.replace(tzinfo=UTC)
EARLIEST = datetime.min.replace(tzinfo=UTC)


def plus(moment: datetime, duration: timedelta) -> datetime:
    """`moment + duration`, clamped to the representable range (aware in, aware out)."""
    try:
        return moment + duration
    except OverflowError:
        latest, earliest = LATEST, EARLIEST
        if moment.tzinfo is None:
            latest, earliest = datetime.max, datetime.min
        return latest if duration > timedelta(0) else earliest
