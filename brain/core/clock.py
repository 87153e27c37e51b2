"""Time for the brain: the API server's clock, and datetime arithmetic that saturates.

`ClusterClock` is "now" for every decision (deadlines, delays, moments written to the lock,
Events): the API server's time, estimated from its responses, so that a brain on a host whose
clock is wrong neither fails a node early nor late.

Datetime arithmetic saturates instead of overflowing.

Durations come from windows (`delayBetweenNodes`, timeouts) and moments from the lock; a huge
duration stored by an older CRD, or a far-future moment in the lock, must not raise
`OverflowError` in a pass: the result is the latest (or earliest) representable moment, i.e.
"never" (or "always") for every comparison the brain makes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

log = logging.getLogger("pitstop.clock")

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


# -- the cluster's clock -------------------------------------------------------------------------

# A test hook, read here only: this brain's wall clock runs this many seconds ahead (negative:
# behind), as a misconfigured host's would. Never set in a real installation.
TEST_CLOCK_OFFSET_VARIABLE = "PITSTOP_TEST_CLOCK_OFFSET_SECONDS"
# The server's `Date` has whole seconds; the monotonic clock may drift from the server's by up
# to this rate (NTP slews at most 500 ppm): the estimate's bounds widen by it between samples.
DATE_RESOLUTION_SECONDS = 1.0
MONOTONIC_DRIFT_RATE = 0.0005


def _test_offset_seconds() -> float:
    try:
        return float(os.environ.get(TEST_CLOCK_OFFSET_VARIABLE, "") or 0.0)
    except ValueError:
        return 0.0


def local_wall_seconds() -> float:
    """This host's wall clock (plus the test hook's offset, if set)."""
    return time.time() + _test_offset_seconds()


def parse_http_date(text: str | None) -> float | None:
    """Seconds since the epoch of an HTTP `Date` header, or None if there is none."""
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


class ClusterClock:
    """The API server's time, as this brain estimates it: what every deadline is judged by.

    Each API response says when the server sent it (`Date`, whole seconds). A response sent
    between our monotonic moments `sent` and `received` bounds `server time - monotonic time`
    to [date - received, date + 1 - sent]; the bounds of all samples are intersected (widened
    by the monotonic clock's possible drift since), and `now()` is the middle of what is left,
    measured forward with the monotonic clock. Every brain, whatever its host's wall clock
    says, so reasons in the same time: the server's. Bounds that no longer meet (the server's
    clock was stepped) start again from the newest sample. Thread-safe: samples arrive from
    the API client's worker threads.
    """

    def __init__(
        self,
        skew_warning_seconds: float = 30.0,
        wall: Callable[[], float] = local_wall_seconds,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.skew_warning_seconds = skew_warning_seconds
        self._wall = wall
        self._monotonic = monotonic
        self._mutex = threading.Lock()
        # Bounds of (server seconds - monotonic seconds), and the monotonic moment they held.
        self._low = 0.0
        self._high = 0.0
        self._at = 0.0
        self._synchronised = False
        self._skew_told = False

    def observe(self, sent: float, received: float, server_date: float | None) -> None:
        """One sample: a response sent by the server at `server_date` (whole seconds) reached
        us between monotonic moments `sent` and `received`."""
        if server_date is None or received < sent:
            return
        low = server_date - received
        high = server_date + DATE_RESOLUTION_SECONDS - sent
        with self._mutex:
            if self._synchronised:
                drift = MONOTONIC_DRIFT_RATE * max(0.0, received - self._at)
                old_low, old_high = self._low - drift, self._high + drift
                if low <= old_high and high >= old_low:  # consistent: narrow down
                    low, high = max(low, old_low), min(high, old_high)
            self._low, self._high, self._at = low, high, max(received, self._at)
            self._synchronised = True
        self._tell_skew()

    def observe_date_header(self, sent: float, received: float, date: str | None) -> None:
        self.observe(sent, received, parse_http_date(date))

    @property
    def synchronised(self) -> bool:
        """At least one response was seen: until then no deadline is judged passed."""
        return self._synchronised

    @property
    def uncertainty_seconds(self) -> float:
        """How far `now()` may be from the server's time (half the bounds' width)."""
        with self._mutex:
            return (self._high - self._low) / 2 if self._synchronised else float("inf")

    def seconds(self) -> float:
        """The server's time in seconds since the epoch (the local wall clock until the first
        sample)."""
        with self._mutex:
            if not self._synchronised:
                return self._wall()
            return self._monotonic() + (self._low + self._high) / 2

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.seconds(), UTC)

    def time_ns(self) -> int:
        return int(self.seconds() * 1_000_000_000)

    def skew_seconds(self) -> float:
        """How far this host's wall clock is ahead of the server's (negative: behind)."""
        return self._wall() - self.seconds() if self._synchronised else 0.0

    @property
    def skewed(self) -> bool:
        """Is this host's clock off by more than the bound (a misconfigured host)?"""
        return abs(self.skew_seconds()) > self.skew_warning_seconds

    def past(self, deadline: datetime | None, now: datetime) -> bool:
        """Has `deadline` passed at `now` (a moment of this clock), beyond any doubt? Never
        before the first sample, and only once even the earliest the server's time may be is
        past it: a node is failed late by at most the uncertainty, never early."""
        if deadline is None or not self._synchronised:
            return False
        return plus(now, -timedelta(seconds=self.uncertainty_seconds)) >= deadline

    def to_local(self, moment: datetime) -> datetime:
        """The moment this host's wall clock shows when the server's shows `moment`: for code
        that waits by the local clock (the drain's own deadline)."""
        return plus(moment, timedelta(seconds=self.skew_seconds()))

    def _tell_skew(self) -> None:
        skew = self.skew_seconds()
        if abs(skew) > self.skew_warning_seconds and not self._skew_told:
            self._skew_told = True
            log.warning(
                "this host's clock is %+.0f s off the API server's (more than %.0f s): the "
                "brain judges every deadline by the API server's time; fix the host's clock "
                "(NTP)",
                skew,
                self.skew_warning_seconds,
            )
