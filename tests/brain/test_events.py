"""The Events' bodies: names in time order, both timestamps, within the API server's limits."""

from __future__ import annotations

import re

from brain.events import event_body, event_name, node_reference

# A DNS subdomain, as the API server checks an object's name.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SECOND = 1_000_000_000
MOMENT = 1_796_000_000 * SECOND + 123_456_789  # 2026-11-30, a little past a second


def test_names_sort_as_the_events_were_posted_within_one_second() -> None:
    moments = [MOMENT, MOMENT + 1_000, MOMENT + 250_000_000, MOMENT + SECOND]
    names = [event_name("node-1", moment) for moment in moments]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert names[0] == f"node-1.{MOMENT:x}"


def test_a_long_object_name_is_shortened_not_the_time() -> None:
    name = event_name("a" * 230 + "-b.c" + "d" * 30, MOMENT)
    assert len(name) <= 253 and DNS_SUBDOMAIN.match(name), name
    assert name.endswith(f".{MOMENT:x}")
    cut_at_a_dash = event_name("a" * 236 + "-" + "b" * 20, MOMENT)
    assert DNS_SUBDOMAIN.match(cut_at_a_dash), cut_at_a_dash


def test_the_body_has_second_and_microsecond_times_and_the_newer_fields() -> None:
    body = event_body(
        node_reference("node-1", "uid-1"), "Started", "é" * 600, "Normal", "brain-0", MOMENT
    )
    assert body["metadata"] == {"name": f"node-1.{MOMENT:x}", "namespace": "default"}
    assert body["eventTime"] == "2026-11-30T00:53:20.123456Z"
    assert body["firstTimestamp"] == body["lastTimestamp"] == "2026-11-30T00:53:20Z"
    assert body["action"] == body["reason"] == "Started"
    assert body["reportingComponent"] == "pitstop-brain"
    assert body["reportingInstance"] == "brain-0"
    assert body["involvedObject"] == {
        "kind": "Node",
        "name": "node-1",
        "uid": "uid-1",
        "apiVersion": "v1",
    }
    message = body["message"]
    assert isinstance(message, str) and len(message.encode()) <= 1024 and message == "é" * 512
