"""The cluster clock's estimate of the API server's time, from injected samples."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from brain.core.clock import (
    TEST_CLOCK_OFFSET_VARIABLE,
    ClusterClock,
    local_wall_seconds,
    parse_http_date,
)

SERVER_START = 1_800_000_000.0  # the server's time when our monotonic clock read 0


class FakeHost:
    """A host whose wall clock is `skew` seconds off the server's; monotonic starts at 0."""

    def __init__(self, skew: float) -> None:
        self.monotonic = 0.0
        self.skew = skew

    def wall(self) -> float:
        return SERVER_START + self.monotonic + self.skew

    def clock(self, warning: float = 30.0) -> ClusterClock:
        return ClusterClock(warning, wall=self.wall, monotonic=lambda: self.monotonic)

    def request(self, clock: ClusterClock, latency: float, served_after: float) -> None:
        """A request sent now, served `served_after` s later, answered `latency` s after it
        was sent; the server's Date header has whole seconds (floored)."""
        sent = self.monotonic
        server_date = float(int(SERVER_START + sent + served_after))
        self.monotonic += latency
        clock.observe(sent, self.monotonic, server_date)


def test_before_the_first_sample_the_clock_is_the_local_one_and_no_deadline_passes() -> None:
    host = FakeHost(skew=600)
    clock = host.clock()
    assert not clock.synchronised
    assert clock.seconds() == host.wall()
    ancient = datetime(2000, 1, 1, tzinfo=UTC)
    assert not clock.past(ancient, clock.now())


@pytest.mark.parametrize("skew", [600.0, -600.0, 0.0, 0.4])
def test_the_estimate_is_the_servers_time_within_a_second_whatever_the_host_says(
    skew: float,
) -> None:
    host = FakeHost(skew)
    clock = host.clock()
    host.request(clock, latency=0.02, served_after=0.01)
    assert clock.synchronised
    server_now = SERVER_START + host.monotonic
    assert abs(clock.seconds() - server_now) <= 0.6
    assert abs(clock.skew_seconds() - skew) <= 0.6


def test_samples_narrow_the_estimate_below_the_dates_one_second_resolution() -> None:
    host = FakeHost(skew=600)
    clock = host.clock()
    for _ in range(40):
        host.monotonic += 0.137  # samples at moments spread over the second
        host.request(clock, latency=0.01, served_after=0.005)
    assert clock.uncertainty_seconds < 0.1
    assert abs(clock.seconds() - (SERVER_START + host.monotonic)) < 0.1


def test_a_deadline_passes_by_the_servers_time_never_early_and_late_by_at_most_the_doubt() -> None:
    host = FakeHost(skew=600)  # ten minutes ahead: its own clock would pass deadlines early
    clock = host.clock()
    host.request(clock, latency=0.05, served_after=0.02)
    deadline = datetime.fromtimestamp(SERVER_START + 60, UTC)
    host.monotonic = 59.0
    assert not clock.past(deadline, clock.now())
    host.monotonic = 60.0 + clock.uncertainty_seconds + 0.6
    assert clock.past(deadline, clock.now())


def test_a_server_clock_stepped_since_starts_again_from_the_newest_sample() -> None:
    host = FakeHost(skew=0)
    clock = host.clock()
    host.request(clock, latency=0.01, served_after=0.0)
    clock.observe(host.monotonic, host.monotonic + 0.01, SERVER_START + host.monotonic + 3600)
    assert abs(clock.seconds() - (SERVER_START + host.monotonic + 3600)) <= 1.0


def test_drift_between_samples_widens_the_bounds_instead_of_emptying_them() -> None:
    host = FakeHost(skew=0)
    clock = host.clock()
    for _ in range(20):
        host.monotonic += 0.3
        host.request(clock, latency=0.01, served_after=0.0)
    # An hour later the server's clock is 1 s ahead of our monotonic count (slow drift).
    host.monotonic += 3600
    sent = host.monotonic
    clock.observe(sent, sent + 0.01, float(int(SERVER_START + sent + 1.0)))
    assert abs(clock.seconds() - (SERVER_START + host.monotonic + 1.0)) <= 1.0


def test_a_skewed_host_is_told_once_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    host = FakeHost(skew=-600)
    clock = host.clock(warning=30)
    with caplog.at_level(logging.WARNING, logger="pitstop.clock"):
        for _ in range(5):
            host.request(clock, latency=0.01, served_after=0.0)
    assert clock.skewed
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "-600 s off the API server's" in lines[0]
    assert not FakeHost(skew=10).clock(warning=30).skewed


def test_to_local_is_the_moment_the_hosts_own_clock_shows_then() -> None:
    host = FakeHost(skew=600)
    clock = host.clock()
    host.request(clock, latency=0.01, served_after=0.0)
    moment = datetime.fromtimestamp(SERVER_START + 100, UTC)
    assert abs(clock.to_local(moment) - (moment + timedelta(seconds=600))) < timedelta(seconds=1)


def test_http_dates_parse_and_junk_is_no_sample() -> None:
    assert (
        parse_http_date("Mon, 30 Nov 2026 08:25:20 GMT")
        == datetime(2026, 11, 30, 8, 25, 20, tzinfo=UTC).timestamp()
    )
    assert parse_http_date("junk") is None
    assert parse_http_date(None) is None


def test_the_test_hook_shifts_only_the_host_clock_the_brain_sees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TEST_CLOCK_OFFSET_VARIABLE, "-600")
    assert abs(local_wall_seconds() - (time.time() - 600)) < 1
    clock = ClusterClock()
    now = time.monotonic()
    clock.observe(now, now + 0.01, float(int(time.time())))
    assert abs(clock.skew_seconds() + 600) < 1.5 and clock.skewed
    assert abs(clock.seconds() - time.time()) < 1.5
