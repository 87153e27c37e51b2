"""The window models: the shared examples, defaults, round trips, helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from brain.core.phase import Phase
from brain.core.window import (
    CONVERTIBLE_DURATION_PATTERN,
    MAX_DELAY_BETWEEN_NODES,
    MAX_DRAIN_TIMEOUT,
    MAX_DURATION_LENGTH,
    MAX_HEALTH_GATE_TIMEOUT,
    MAX_HOOK_TIMEOUT,
    MAX_NODE_RETURN_TIMEOUT,
    Condition,
    ConditionStatus,
    ConditionType,
    NodeStatus,
    WindowSpec,
    WindowSpecError,
    WindowStatus,
    duration_range_message,
    format_duration,
    parse_duration,
    parse_window_object,
    parse_window_spec,
    resolve_int_or_percent,
    set_condition,
)
from tests.brain.core.window_examples import (
    INVALID,
    STATUS_INVALID,
    STATUS_VALID,
    VALID,
    Example,
)


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
    assert spec.topology is None
    assert spec.reboot.health_gate.timeout == timedelta(minutes=10)
    assert spec.hooks.pre_drain is None


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


# Go's time.Duration (CEL's duration()) holds at most 2^63-1 nanoseconds.
GO_MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
CRD_PATH = Path(__file__).resolve().parents[3] / "crds" / "pitstop.dev_nodesmaintenancewindows.yaml"


@given(st.from_regex(CONVERTIBLE_DURATION_PATTERN, fullmatch=True))
def test_a_convertible_duration_never_overflows_cel(text: str) -> None:
    """The CRD converts a duration only if it has this shape and at most 32 characters, so CEL's
    duration() never fails with "type conversion error" (the tester's 80000000h)."""
    if len(text) <= MAX_DURATION_LENGTH:
        assert parse_duration(text) < GO_MAX_DURATION


@pytest.mark.parametrize(
    "worst", ["99999h99999h99999h99999h99999h", "999999999s999999999s999999999s", "0" * 31 + "1h"]
)
def test_the_longest_convertible_durations_stay_below_go_limits(worst: str) -> None:
    assert re.fullmatch(CONVERTIBLE_DURATION_PATTERN, worst)
    assert parse_duration(worst) < GO_MAX_DURATION / 2


@given(st.integers(0, int(MAX_DELAY_BETWEEN_NODES.total_seconds() * 1000)))
def test_every_duration_in_range_is_convertible(milliseconds: int) -> None:
    """So the CRD's shape guard never refuses a value pydantic accepts."""
    text = format_duration(timedelta(milliseconds=milliseconds))
    assert re.fullmatch(CONVERTIBLE_DURATION_PATTERN, text)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        if milliseconds % size == 0:
            assert re.fullmatch(CONVERTIBLE_DURATION_PATTERN, f"{milliseconds // size}{unit}")


def _crd_field(path: str) -> dict[str, Any]:
    crd = yaml.safe_load(CRD_PATH.read_text())
    node: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for name in path.split("."):
        node = node["properties"][name]
    return node


@pytest.mark.parametrize(
    ("path", "maximum", "positive"),
    [
        ("spec.drain.timeout", MAX_DRAIN_TIMEOUT, True),
        ("spec.reboot.nodeReturnTimeout", MAX_NODE_RETURN_TIMEOUT, True),
        ("spec.reboot.delayBetweenNodes", MAX_DELAY_BETWEEN_NODES, False),
        ("spec.reboot.healthGate.timeout", MAX_HEALTH_GATE_TIMEOUT, True),
        ("spec.hooks.preDrain.timeout", MAX_HOOK_TIMEOUT, True),
        ("spec.hooks.postReboot.timeout", MAX_HOOK_TIMEOUT, True),
    ],
)
def test_the_crd_bounds_each_duration_like_pydantic(
    path: str, maximum: timedelta, positive: bool
) -> None:
    field = _crd_field(path)
    assert field["maxLength"] == MAX_DURATION_LENGTH
    (range_rule,) = [
        rule for rule in field["x-kubernetes-validations"] if "duration(self)" in rule["rule"]
    ]
    assert range_rule["message"] == duration_range_message(maximum, positive)
    assert f"self.matches('{CONVERTIBLE_DURATION_PATTERN}')" in range_rule["rule"]
    assert f"duration(self) <= duration('{format_duration(maximum)}')" in range_rule["rule"]
    assert ("duration(self) > duration('0s')" in range_rule["rule"]) == positive
    assert format_duration(maximum) in field["description"]


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


@pytest.mark.parametrize("example", STATUS_VALID, ids=lambda e: e.name)
def test_valid_status_examples_parse_and_round_trip(example: Example) -> None:
    status = WindowStatus.model_validate(example.spec)
    assert WindowStatus.model_validate(status.to_api()) == status


@pytest.mark.parametrize("example", STATUS_INVALID, ids=lambda e: e.name)
def test_invalid_status_examples_are_rejected(example: Example) -> None:
    with pytest.raises(ValidationError) as raised:
        WindowStatus.model_validate(example.spec)
    assert example.pydantic_words.lower() in str(raised.value).lower()
