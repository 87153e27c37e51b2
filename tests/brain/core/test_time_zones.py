"""The CRD's list of time zones is exactly the one pydantic checks (tzdata's)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from brain.core.time_zones import KNOWN_TIME_ZONES, cel_rule

REPOSITORY = Path(__file__).resolve().parents[3]


def time_zone_rules(crd_path: Path) -> list[str]:
    crd = yaml.safe_load(crd_path.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    zone = schema["properties"]["spec"]["properties"]["schedule"]["properties"]["timeZone"]
    return [rule["rule"] for rule in zone["x-kubernetes-validations"]]


def test_the_crd_knows_the_same_time_zones_as_pydantic() -> None:
    rules = time_zone_rules(REPOSITORY / "crds" / "pitstop.dev_nodesmaintenancewindows.yaml")
    listed = [rule for rule in rules if rule.startswith("self in ")]
    assert listed == [cel_rule()], "regenerate the rule: python -m brain.core.time_zones"
    zones = set(json.loads(listed[0].removeprefix("self in ")))
    assert zones == KNOWN_TIME_ZONES
    assert {"UTC", "Europe/Berlin", "America/New_York"} <= zones
    assert "Mars/Olympus_Mons" not in zones
