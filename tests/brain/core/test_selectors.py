"""The one label-selector implementation: matching (Kubernetes semantics), the CRD's structured
form, and the API's text form the pod blocker sends."""

from __future__ import annotations

import pytest

from brain.core.selectors import (
    EVERYTHING,
    Operator,
    Requirement,
    Selector,
    SelectorError,
    parse_selector,
    selector_from_object,
)
from brain.core.window import LabelSelector


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app=web", {}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("tier in (front, back)", {"tier": "back"}, True),
        ("tier in (front,back)", {"tier": "db"}, False),
        ("tier notin (db)", {}, True),
        ("tier notin (db)", {"tier": "db"}, False),
        ("canary", {"canary": ""}, True),
        ("canary", {}, False),
        ("!canary", {}, True),
        ("!canary", {"canary": "yes"}, False),
        ("app=web,tier in (front),!canary", {"app": "web", "tier": "front"}, True),
        ("app=web,tier in (front),!canary", {"app": "web", "tier": "front", "canary": "1"}, False),
        ("example.com/role=edge", {"example.com/role": "edge"}, True),
        ("app=", {"app": ""}, True),
    ],
)
def test_selector_strings(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(selector).matches(labels) is expected


@pytest.mark.parametrize("bad", ["app in web", "=web", "app=(x)", "a,,b", "tier in (a", "a)"])
def test_malformed_selector_strings_are_refused(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_selector(bad)


def test_structured_selectors() -> None:
    assert selector_from_object(None).matches({"app": "web"}) is False
    assert selector_from_object({}).matches({"app": "web"}) is True
    selector = selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front"]},
                {"key": "canary", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"app": "web", "tier": "front"})
    assert not selector.matches({"app": "web", "tier": "front", "canary": "x"})
    assert not selector.matches({"app": "web"})
    with pytest.raises(SelectorError):
        selector_from_object({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def test_the_text_form_covers_every_operator_in_the_apis_syntax() -> None:
    selector = selector_from_object(
        {
            "matchLabels": {"app": "backup", "a-first": "x"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "NotIn", "values": ["dev"]},
                {"key": "critical", "operator": "Exists"},
                {"key": "skip", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.text() == "a-first=x,app=backup,tier in (a,b),env notin (dev),critical,!skip"
    assert EVERYTHING.text() == "" and str(EVERYTHING) == "(everything)"
    with pytest.raises(ValueError, match="null label selector"):
        selector_from_object(None).text()


@pytest.mark.parametrize(
    "text",
    [
        "app=web",
        "app!=web",
        "tier in (front,back),!canary",
        "tier notin (db),canary,example.com/role=edge",
        "app=",
    ],
)
def test_the_text_form_parses_back_to_the_same_selector(text: str) -> None:
    selector = parse_selector(text)
    assert parse_selector(selector.text()) == selector


def test_the_window_models_selector_is_this_implementation() -> None:
    model = LabelSelector.model_validate(
        {
            "matchLabels": {"pool": "web"},
            "matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["c"]}],
        }
    )
    assert model.selector == Selector(
        (
            Requirement("pool", Operator.IN, frozenset({"web"})),
            Requirement("zone", Operator.NOT_IN, frozenset({"c"})),
        )
    )
    assert model.matches({"pool": "web"}) and model.matches({"pool": "web", "zone": "a"})
    assert not model.matches({"pool": "web", "zone": "c"}) and not model.matches({})
    assert LabelSelector().matches({"any": "labels"}) and LabelSelector().selector == EVERYTHING
