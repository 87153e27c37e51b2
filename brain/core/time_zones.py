"""The IANA time zones a window may name: the `tzdata` package's list, one source for both sides.

pydantic checks a window's `timeZone` against this list, and the CRD carries the same list in a
CEL rule (tests/brain/test_time_zones.py proves they are equal; regenerate the CRD's rule with
`python -m brain.core.time_zones` after a tzdata update).
"""

from __future__ import annotations

import importlib.resources
import json

KNOWN_TIME_ZONES: frozenset[str] = frozenset(
    importlib.resources.files("tzdata").joinpath("zones").read_text().split()
)
MESSAGE_UNKNOWN_TIME_ZONE = "timeZone must be a known IANA time zone name like UTC or Europe/Berlin"


def cel_rule() -> str:
    """The CEL rule the CRD uses (a list literal of every known zone)."""
    return "self in " + json.dumps(sorted(KNOWN_TIME_ZONES), separators=(",", ":"))


if __name__ == "__main__":
    print(cel_rule())
