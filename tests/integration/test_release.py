"""`make release` into a real local OCI registry (distribution's), then `helm install` from it.

What a user of a published release does: install the chart by its oci:// reference and version,
with no --set for the images; the rendered Deployment and DaemonSet must run the images of the
same release, from the same registry.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localcluster.controlplane import ControlPlane
from localcluster.registry import LocalRegistry, local_registry
from pitstop.version import version

REPOSITORY = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with local_registry() as running:
        yield running


def test_make_release_then_helm_install_from_the_registry(
    registry: LocalRegistry, cluster: ControlPlane
) -> None:
    release_version = version()
    made = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "release",
            f"REGISTRY={registry.address}",
            f"VERSION={release_version}",
            "INSECURE=1",
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "UV_NO_PROGRESS": "1"},
        check=False,
    )
    print(made.stdout + made.stderr)
    assert made.returncode == 0, made.stdout + made.stderr
    assert {"pitstop", "pitstop-detector", "charts/pitstop"} <= set(registry.repositories())
    for repository in ("pitstop", "pitstop-detector", "charts/pitstop"):
        assert release_version in registry.tags(repository), repository

    suffix = uuid.uuid4().hex[:6]
    name, namespace = f"rel-{suffix}", f"rel-system-{suffix}"
    chart = f"oci://{registry.address}/charts/pitstop"
    cluster.kubectl("create", "namespace", namespace)
    helm = [str(cluster.binaries["helm"])]
    install = [
        *helm,
        "install",
        name,
        chart,
        "--version",
        release_version,
        "--plain-http",
        "-n",
        namespace,
        "--set",
        f"reboot.jobNamespace.name=rel-reboot-{suffix}",
    ]
    try:
        result = subprocess.run(
            install,
            capture_output=True,
            text=True,
            env=cluster.environment(),
            timeout=300,
            check=False,
        )
        print(f"$ helm {' '.join(install[1:])}\n{result.stdout}{result.stderr}")
        assert result.returncode == 0, result.stderr
        assert f"Pulled: {registry.address}/charts/pitstop:{release_version}" in result.stderr
        images = {}
        # The release name lacks "pitstop": the chart's <fullname> is rel-...-pitstop.
        fullname = f"{name}-pitstop"
        for kind, workload in (
            ("deployment", f"{fullname}-brain"),
            ("daemonset", f"{fullname}-detector"),
        ):
            found = json.loads(
                cluster.kubectl("get", kind, workload, "-n", namespace, "-o", "json").stdout
            )
            (container,) = found["spec"]["template"]["spec"]["containers"]
            images[kind] = container["image"]
        assert images == {
            "deployment": f"{registry.address}/pitstop:{release_version}",
            "daemonset": f"{registry.address}/pitstop-detector:{release_version}",
        }
    finally:
        subprocess.run(
            [*helm, "uninstall", name, "-n", namespace],
            capture_output=True,
            env=cluster.environment(),
            check=False,
        )
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
