"""Kubernetes label selectors: the one implementation, matched locally and written as the
API's selector text.

Every selector of the brain goes through here: a window's nodeSelector (the planner matches
nodes), its drain podSelector (the drain matches the node's pods), the selectors of
PodDisruptionBudgets (to name the budgets that covered the evicted pods, for the health gate)
and the pod blocker's selectors (sent to the API server as `labelSelector` text). The window's
pydantic model only validates the CRD's form and hands over a `Selector`. Semantics follow
k8s.io/apimachinery/pkg/labels: `!=` and `notin` also match objects without the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator is Operator.EXISTS:
            return present
        if self.operator is Operator.DOES_NOT_EXIST:
            return not present
        if self.operator is Operator.IN:
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values

    def text(self) -> str:
        """This requirement in the API's selector syntax (values sorted: one spelling each)."""
        values = sorted(self.values)
        if self.operator is Operator.EXISTS:
            return self.key
        if self.operator is Operator.DOES_NOT_EXIST:
            return f"!{self.key}"
        if self.operator is Operator.IN and len(values) == 1:
            return f"{self.key}={values[0]}"
        word = "in" if self.operator is Operator.IN else "notin"
        return f"{self.key} {word} ({','.join(values)})"


@dataclass(frozen=True)
class Selector:
    """All requirements must match. `nothing` is the null selector, which matches no object."""

    requirements: tuple[Requirement, ...] = ()
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        present = labels or {}
        return all(requirement.matches(present) for requirement in self.requirements)

    def text(self) -> str:
        """The selector as the API's `labelSelector` text; "" (everything) for no requirements.

        The null selector has no text form (the API has no way to say "nothing"): ValueError.
        """
        if self.nothing:
            raise ValueError("the null label selector (matches nothing) has no text form")
        return ",".join(requirement.text() for requirement in self.requirements)

    def __str__(self) -> str:
        return "(nothing)" if self.nothing else self.text() or "(everything)"


# The empty selector: every object matches (a drain without a podSelector).
EVERYTHING = Selector()


class SelectorError(ValueError):
    """A label selector string that Kubernetes would refuse too."""


_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET_PATTERN = re.compile(rf"^\s*(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_EQUALITY_PATTERN = re.compile(rf"^\s*(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})\s*$")
_EXISTS_PATTERN = re.compile(rf"^\s*(?P<bang>!?)\s*(?P<key>{_KEY})\s*$")
_VALUE_PATTERN = re.compile(rf"^{_VALUE}$")


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a `( ... )` value set."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for character in text:
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError(f"unbalanced ')' in selector {text!r}")
        if character == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(character)
    if depth != 0:
        raise SelectorError(f"unbalanced '(' in selector {text!r}")
    terms.append("".join(current))
    return terms


def _parse_term(term: str, whole: str) -> Requirement:
    if match := _SET_PATTERN.match(term):
        values = [value.strip() for value in match["values"].split(",")]
        if any(not _VALUE_PATTERN.match(value) for value in values):
            raise SelectorError(f"invalid value in {term.strip()!r} of selector {whole!r}")
        operator = Operator.IN if match["op"] == "in" else Operator.NOT_IN
        return Requirement(match["key"], operator, frozenset(values))
    if match := _EQUALITY_PATTERN.match(term):
        operator = Operator.NOT_IN if match["op"] == "!=" else Operator.IN
        return Requirement(match["key"], operator, frozenset({match["value"]}))
    if match := _EXISTS_PATTERN.match(term):
        operator = Operator.DOES_NOT_EXIST if match["bang"] else Operator.EXISTS
        return Requirement(match["key"], operator)
    raise SelectorError(f"cannot parse {term.strip()!r} in label selector {whole!r}")


def parse_selector(text: str | None) -> Selector:
    """Parse a label selector string; an empty or missing one matches everything."""
    if text is None or not text.strip():
        return Selector()
    return Selector(tuple(_parse_term(term, text) for term in _split_terms(text)))


def selector_from_object(selector: Mapping[str, Any] | None) -> Selector:
    """A metav1.LabelSelector (matchLabels, matchExpressions); None matches nothing, {} all."""
    if selector is None:
        return Selector(nothing=True)
    requirements = [
        Requirement(str(key), Operator.IN, frozenset({str(value)}))
        for key, value in sorted((selector.get("matchLabels") or {}).items())
    ]
    expressions: Sequence[Mapping[str, Any]] = selector.get("matchExpressions") or []
    for expression in expressions:
        try:
            operator = Operator(expression["operator"])
        except (KeyError, ValueError) as error:
            raise SelectorError(f"unknown selector operator in {dict(expression)!r}") from error
        values = frozenset(str(value) for value in expression.get("values") or [])
        requirements.append(Requirement(str(expression["key"]), operator, values))
    return Selector(tuple(requirements))
