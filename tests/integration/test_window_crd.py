"""The CRD on the real API server agrees with the pydantic models, documents itself, shows its
columns, and every example manifest applies."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from brain.core.window import WindowSpecError, WindowStatus, parse_window_spec
from localcluster.controlplane import ControlPlane
from tests.brain.core.window_examples import (
    INVALID,
    STATUS_INVALID,
    STATUS_VALID,
    VALID,
    Example,
)

pytestmark = pytest.mark.cluster

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"


def manifest(spec: dict[str, Any], name: str | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "pitstop.dev/v1alpha1",
            "kind": "NodesMaintenanceWindow",
            "metadata": {"name": name or f"test-{uuid.uuid4().hex[:8]}"},
            "spec": spec,
        }
    )


def server_dry_run(cluster: ControlPlane, spec: dict[str, Any]) -> tuple[bool, str, dict[str, Any]]:
    """Create with dry-run=All: (accepted, error text, the object as the server would store it)."""
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=manifest(spec), check=False
    )
    if result.returncode != 0:
        return False, result.stderr, {}
    return True, "", json.loads(result.stdout)


def pydantic_verdict(spec: dict[str, Any]) -> tuple[bool, str]:
    try:
        parse_window_spec(spec, "example")
    except WindowSpecError as error:
        return False, str(error)
    return True, ""


@pytest.mark.parametrize("example", VALID + INVALID, ids=lambda example: example.name)
def test_api_server_and_pydantic_agree(window_crd: ControlPlane, example: Example) -> None:
    server_accepts, server_error, stored = server_dry_run(window_crd, example.spec)
    pydantic_accepts, pydantic_error = pydantic_verdict(example.spec)
    assert (server_accepts, pydantic_accepts) == (example.valid, example.valid), (
        f"server: {server_error or 'accepted'}\npydantic: {pydantic_error or 'accepted'}"
    )
    if example.valid:
        # The server's defaults and pydantic's are the same: parsing what the server would store
        # gives the same model as parsing what was sent.
        assert parse_window_spec(stored["spec"]) == parse_window_spec(example.spec)
        # And what pydantic writes back is accepted by the server.
        dumped = parse_window_spec(example.spec).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        assert server_dry_run(window_crd, dumped)[0]
    else:
        assert example.api_words.lower() in server_error.lower(), server_error
        # A rule that cannot evaluate (CEL's duration() overflowing on 80000000h) says
        # "type conversion error ... evaluating rule": never a message for people.
        assert "evaluating rule" not in server_error, server_error
        assert example.pydantic_words.lower() in pydantic_error.lower(), pydantic_error


@pytest.fixture(scope="module")
def status_window(window_crd: ControlPlane) -> Iterator[str]:
    """A window whose status subresource the status examples are dry-run against."""
    name = f"status-{uuid.uuid4().hex[:8]}"
    window_crd.kubectl("create", "-f", "-", input=manifest({}, name))
    yield name
    window_crd.kubectl("delete", "nmw", name, "--wait=false")


@pytest.mark.parametrize("example", STATUS_VALID + STATUS_INVALID, ids=lambda e: e.name)
def test_api_server_and_pydantic_agree_on_status(
    window_crd: ControlPlane, api_client: client.ApiClient, status_window: str, example: Example
) -> None:
    """What the brain may write as status is what the API server accepts (status.nodes is
    bounded alike on both sides, so the object stays small at any scale)."""
    server_error = ""
    try:
        client.CustomObjectsApi(api_client).patch_cluster_custom_object_status(
            "pitstop.dev",
            "v1alpha1",
            "nodesmaintenancewindows",
            status_window,
            {"status": example.spec},
            dry_run="All",
            field_validation="Strict",
            _content_type="application/merge-patch+json",
        )
    except client.exceptions.ApiException as error:
        server_error = str(error.body)
    try:
        WindowStatus.model_validate(example.spec)
        pydantic_accepts, pydantic_error = True, ""
    except ValueError as error:
        pydantic_accepts, pydantic_error = False, str(error)
    server_accepts = not server_error
    assert (server_accepts, pydantic_accepts) == (example.valid, example.valid), (
        f"server: {server_error or 'accepted'}\npydantic: {pydantic_error or 'accepted'}"
    )
    if not example.valid:
        assert example.api_words.lower() in server_error.lower(), server_error
        assert example.pydantic_words.lower() in pydantic_error.lower(), pydantic_error


def explain(cluster: ControlPlane, field: str) -> str:
    """`kubectl explain`, once the CRD's OpenAPI is published: a few seconds after the CRD is
    served, so a session that starts with this test would otherwise see "couldn't find"."""
    deadline = time.monotonic() + 60
    while True:
        result = cluster.kubectl("explain", field, check=False)
        if result.returncode == 0:
            return result.stdout
        assert time.monotonic() < deadline, result.stderr
        time.sleep(1)


def test_kubectl_explain_shows_the_documentation(window_crd: ControlPlane) -> None:
    spec = explain(window_crd, "nodesmaintenancewindow.spec")
    for field in ("nodeSelector", "priority", "schedule", "maxUnavailable", "drain", "reboot"):
        assert field in spec
    assert "highest" in spec and "priority" in spec
    zone = explain(window_crd, "nmw.spec.schedule.timeZone")
    assert "IANA time zone" in zone and "tz database" in zone
    # Every bounded field says its range where people look it up.
    for field, words in (
        ("drain.timeout", "at most 24h"),
        ("reboot.nodeReturnTimeout", "at most 24h"),
        ("reboot.delayBetweenNodes", "at most 168h"),
        ("reboot.healthGate.timeout", "at most 24h"),
        ("hooks.preDrain.timeout", "at most 10m"),
        ("hooks.postReboot.timeout", "at most 10m"),
        ("topology.key", "required"),
        ("reboot.jobTemplate.spec.containers", "1 to 16"),
    ):
        text = " ".join(explain(window_crd, f"nmw.spec.{field}").split())
        assert words in text, (field, text)


def test_every_field_has_a_description() -> None:
    crd = yaml.safe_load(
        (EXAMPLES_DIR.parent / "crds" / "pitstop.dev_nodesmaintenancewindows.yaml").read_text()
    )
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        if path not in ("", ".metadata") and not node.get("description"):
            missing.append(path)
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict) and node["items"].get("properties"):
            walk(node["items"], f"{path}[]")

    walk(schema, "")
    assert missing == []


def test_kubectl_get_shows_the_columns(window_crd: ControlPlane) -> None:
    name = f"columns-{uuid.uuid4().hex[:8]}"
    window_crd.kubectl("create", "-f", "-", input=manifest({}, name))
    try:
        status = {
            "status": {
                "conditions": [
                    {
                        "type": "WindowOpen",
                        "status": "True",
                        "reason": "InWindow",
                        "message": "open",
                        "lastTransitionTime": "2025-06-01T00:00:00Z",
                    }
                ],
                "counts": {
                    "governed": 7,
                    "pending": 3,
                    "inMaintenance": 2,
                    "done": 4,
                    "failed": 1,
                },
                "nextWindowStart": "2025-06-07T22:00:00Z",
            }
        }
        window_crd.kubectl(
            "patch", "nmw", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
        )
        table = window_crd.kubectl("get", "nmw", name).stdout.splitlines()
        assert table[0].split() == [
            "NAME",
            "OPEN",
            "GOVERNED",
            "PENDING",
            "ACTIVE",
            "DONE",
            "FAILED",
            "NEXT",
            "AGE",
        ]
        assert table[1].split()[:8] == [
            name,
            "True",
            "7",
            "3",
            "2",
            "4",
            "1",
            "2025-06-07T22:00:00Z",
        ]
        # The category works too.
        assert name in window_crd.kubectl("get", "pitstop").stdout
    finally:
        window_crd.kubectl("delete", "nmw", name, "--wait=false")


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", example_files(), ids=lambda path: path.name)
def test_every_example_applies_and_parses(window_crd: ControlPlane, path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path} holds no manifest"
    for document in documents:
        assert document["kind"] == "NodesMaintenanceWindow"
        parse_window_spec(document.get("spec") or {}, document["metadata"]["name"])
    # Server-side dry run: validated and defaulted by the real API server, nothing left behind.
    window_crd.kubectl("apply", "--dry-run=server", "-f", str(path))


def test_examples_exist() -> None:
    names = {path.name for path in example_files()}
    assert len(names) >= 4, names
