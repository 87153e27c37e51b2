"""The window models: the shared examples, defaults, round trips, helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brain.phase import Phase
from brain.window import (
    Condition,
    ConditionStatus,
    ConditionType,
    NodeStatus,
    WindowSpec,
    WindowSpecError,
    WindowStatus,
    format_duration,
    parse_duration,
    parse_window_object,
    parse_window_spec,
    resolve_int_or_percent,
    set_condition,
)
from tests.brain.window_examples import INVALID, VALID, Example


@pytest.mark.parametrize("example", VALID, ids=lambda example: example.name)
def test_valid_examples_parse_and_round_trip(example: Example) -> None:
    spec = parse_window_spec(example.spec, "w")
    dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert parse_window_spec(dumped, "w") == spec


@pytest.mark.parametrize("example", INVALID, ids=lambda e: e.name)
def test_invalid_examples_are_rejected_with_a_clear_message(example: Example) -> None:
    with pytest.raises(WindowSpecError) as caught:
        parse_window_spec(example.spec, "night-shift")
    message = str(caught.value)
    assert "'night-shift'" in message
    assert example.pydantic_words.lower() in message.lower()


def test_defaults_are_the_documented_ones() -> None:
    spec = parse_window_spec({}, "w")
    assert spec.max_unavailable == 1
    assert spec.priority == 0
    assert spec.schedule.time_zone == "UTC"
    assert spec.drain.timeout == timedelta(minutes=10)
    assert spec.reboot.node_return_timeout == timedelta(minutes=15)
    assert spec.reboot.delay_between_nodes == timedelta()
    assert spec.reboot.method == "DBus"
    assert spec.count_unhealthy and spec.drain.enabled and not spec.suspend
    assert spec.node_selector.matches({"any": "labels"})
    with_days = parse_window_spec({"schedule": {"windows": [{"start": "01:00", "end": "02:00"}]}})
    assert with_days.schedule.windows[0].days == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert parse_window_spec({"topology": {}}).topology is not None


def test_snake_case_names_work_in_python() -> None:
    spec = WindowSpec(max_unavailable="20%", count_unhealthy=False)
    assert spec.model_dump(by_alias=True)["maxUnavailable"] == "20%"
    assert spec.model_dump(by_alias=True)["countUnhealthy"] is False


def test_parse_window_object_names_the_window() -> None:
    body: dict[str, Any] = {
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "NodesMaintenanceWindow",
        "metadata": {"name": "weekend", "generation": 3},
        "spec": {"maxUnavailable": "10%"},
    }
    name, generation, spec = parse_window_object(body)
    assert (name, generation, spec.max_unavailable) == ("weekend", 3, "10%")
    body["spec"] = {"maxUnavailable": "150%"}
    with pytest.raises(WindowSpecError, match=r"'weekend' is invalid: spec\.maxUnavailable: must"):
        parse_window_object(body)
    with pytest.raises(WindowSpecError, match=r"metadata\.name"):
        parse_window_object({"spec": {}})
    assert parse_window_object({"metadata": {"name": "bare"}})[2] == WindowSpec()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta()),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("2h0m5s", timedelta(hours=2, seconds=5)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@given(st.integers(0, 10**10))
def test_format_duration_round_trips(milliseconds: int) -> None:
    value = timedelta(milliseconds=milliseconds)
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "5", "1.5h", "5 m", "1d", "-5s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(3, 10, 3), ("10%", 25, 2), ("10%", 5, 1), ("100%", 7, 7), ("50%", 0, 1), ("33%", 10, 3)],
)
def test_resolve_int_or_percent(value: int | str, total: int, expected: int) -> None:
    assert resolve_int_or_percent(value, total) == expected


T0 = datetime(2025, 6, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_set_condition_moves_the_transition_time_only_on_a_status_change() -> None:
    conditions = set_condition([], "WindowOpen", ConditionStatus.FALSE, "Closed", "closed", T0, 1)
    assert conditions[0].last_transition_time == T0
    same = set_condition(conditions, "WindowOpen", ConditionStatus.FALSE, "Closed", "still", T1, 2)
    assert same[0].last_transition_time == T0
    assert (same[0].message, same[0].observed_generation) == ("still", 2)
    changed = set_condition(same, "WindowOpen", ConditionStatus.TRUE, "Open", "open", T1, 2)
    assert changed[0].last_transition_time == T1
    both = set_condition(changed, ConditionType.READY, ConditionStatus.TRUE, "Valid", "", T1)
    assert [c.type for c in both] == ["WindowOpen", "Ready"]
    assert conditions[0].status == ConditionStatus.FALSE  # the input list is not changed


def test_status_serializes_to_the_api_shape() -> None:
    status = WindowStatus(
        observed_generation=2,
        conditions=[
            Condition(
                type="Ready", status=ConditionStatus.TRUE, last_transition_time=T0, reason="Valid"
            )
        ],
        next_window_start=T1,
        nodes=[NodeStatus(name="n1", phase=Phase.REBOOTING, since=T0, boot_id_before="abc")],
    )
    body = status.to_api()
    assert body["nextWindowStart"] == "2025-06-01T00:05:00Z"
    assert "nextWindowEnd" not in body
    assert body["nodes"] == [
        {
            "name": "n1",
            "phase": "Rebooting",
            "since": "2025-06-01T00:00:00Z",
            "message": "",
            "bootIDBefore": "abc",
        }
    ]
    assert body["conditions"][0]["lastTransitionTime"] == "2025-06-01T00:00:00Z"
    assert body["counts"] == {
        "governed": 0,
        "pending": 0,
        "inMaintenance": 0,
        "done": 0,
        "failed": 0,
    }
    assert WindowStatus.model_validate(body) == status
