"""The chart's RHEL-family sidecar (detector.rpmCheck): what it runs and mounts."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster.binaries import resolve
from tests.charts.test_chart import find, render


@pytest.fixture(scope="module")
def helm() -> Path:
    return resolve(("helm",))["helm"]


def test_the_sidecar_reads_the_rpm_database_read_only_and_shares_the_sentinel(
    helm: Path,
) -> None:
    documents = render(helm, "detector.rpmCheck.enabled=true")
    pod = find(documents, "DaemonSet", "pitstop-detector")["spec"]["template"]["spec"]
    detector, sidecar = pod["containers"]
    assert sidecar["name"] == "rpm-check" and sidecar["image"] == detector["image"]
    assert sidecar["command"][:3] == ["python", "-m", "detector.rpm_check"]
    security = sidecar["securityContext"]
    assert security["capabilities"]["drop"] == ["ALL"] and security["readOnlyRootFilesystem"]
    assert not security["allowPrivilegeEscalation"] and not security.get("privileged")
    mounts = {mount["name"]: mount for mount in sidecar["volumeMounts"]}
    assert mounts["rpm-database"]["readOnly"] is True
    assert not mounts["shared-sentinel"].get("readOnly")
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["rpm-database"]["hostPath"] == {"path": "/var/lib/rpm", "type": "Directory"}
    assert "emptyDir" in volumes["shared-sentinel"]
    # The detector watches the shared volume, read-only, and no host /var/run is mounted.
    assert "sentinel" not in volumes
    environment = {item["name"]: item.get("value") for item in detector["env"]}
    assert environment["PITSTOP_SENTINEL_PATH"] == "/sentinel/reboot-required"
    assert {m["name"]: m.get("readOnly") for m in detector["volumeMounts"]} == {
        "shared-sentinel": True
    }


def test_off_by_default(helm: Path) -> None:
    pod = find(render(helm), "DaemonSet", "pitstop-detector")["spec"]["template"]["spec"]
    assert [container["name"] for container in pod["containers"]] == ["detector"]
