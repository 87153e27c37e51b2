"""`make release REGISTRY=host:port [VERSION=x] [INSECURE=1]`: both images and the chart, pushed
to an OCI registry.

The images (built by localcluster.image) are pushed with podman as REGISTRY/pitstop:VERSION and
REGISTRY/pitstop-detector:VERSION; the chart is packaged with that version and appVersion, its
default image repositories pointing at REGISTRY, and pushed with `helm push` to
oci://REGISTRY/charts, so that `helm install pitstop oci://REGISTRY/charts/pitstop --version
VERSION` runs the images of the same release without any --set. VERSION must be pyproject's (the
one version every command, metric and chart reports); INSECURE=1 talks plain HTTP to the
registry (a local test registry).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from localcluster import image
from localcluster.binaries import resolve
from localcluster.processes import run_step
from pitstop.version import version

REPOSITORY = Path(__file__).resolve().parents[1]
CHART = REPOSITORY / "charts" / "pitstop"
CHART_REPOSITORY = "charts"  # oci://REGISTRY/charts/pitstop
# The chart's default image repositories (values.yaml), replaced by the release's.
DEFAULT_REPOSITORIES = {
    "brain": "ghcr.io/pitstop-dev/pitstop",
    "detector": "ghcr.io/pitstop-dev/pitstop-detector",
}


class ReleaseError(RuntimeError):
    """A release step failed; the message names the step and its output."""


@dataclass(frozen=True)
class Release:
    images: dict[str, str]  # target -> REGISTRY/name:VERSION
    chart: str  # oci://REGISTRY/charts/pitstop
    version: str


def _log(message: str) -> None:
    print(f"[release] {message}", file=sys.stderr, flush=True)


def _run(arguments: Sequence[str], what: str, timeout: float = 1800) -> str:
    _log(" ".join(arguments))
    result = run_step(arguments, what, timeout, ReleaseError)
    return result.stdout + result.stderr


def image_repository(registry: str, target: str) -> str:
    return f"{registry}/{image.IMAGE_NAMES[target]}"


def release_chart(folder: Path, registry: str, release_version: str) -> Path:
    """A copy of the chart whose default images are the release's, packaged as a .tgz."""
    chart = folder / "pitstop"
    shutil.copytree(CHART, chart)
    values = chart / "values.yaml"
    text = values.read_text()
    for target, default in DEFAULT_REPOSITORIES.items():
        line = re.compile(rf"^(\s*repository: ){re.escape(default)}$", re.MULTILINE)
        text, count = line.subn(rf"\g<1>{image_repository(registry, target)}", text)
        if count != 1:
            raise ReleaseError(f"values.yaml has {count} lines 'repository: {default}', not one")
    values.write_text(text)
    helm = str(resolve(("helm",))["helm"])
    _run(
        [
            helm,
            "package",
            str(chart),
            "--version",
            release_version,
            "--app-version",
            release_version,
            "--destination",
            str(folder),
        ],
        "helm package",
    )
    return folder / f"pitstop-{release_version}.tgz"


def release(registry: str, release_version: str | None = None, insecure: bool = False) -> Release:
    """Build and push both images and the chart; returns what was pushed where."""
    release_version = release_version or version()
    if release_version != version():
        raise ReleaseError(
            f"VERSION={release_version} is not pyproject's version {version()}: bump "
            "pyproject.toml and charts/pitstop/Chart.yaml first (one version for everything)"
        )
    tls = ["--tls-verify=false"] if insecure else []
    pushed = {}
    for target, built in image.build_images().items():
        reference = f"{image_repository(registry, target)}:{release_version}"
        _run(image.podman("tag", built.reference, reference), f"podman tag {target}")
        _run(image.podman("push", *tls, reference), f"podman push {reference}")
        pushed[target] = reference
    with tempfile.TemporaryDirectory(prefix="pitstop-release-") as folder:
        package = release_chart(Path(folder), registry, release_version)
        helm = str(resolve(("helm",))["helm"])
        plain = ["--plain-http"] if insecure else []
        destination = f"oci://{registry}/{CHART_REPOSITORY}"
        _run([helm, "push", str(package), destination, *plain], "helm push")
    return Release(pushed, f"{destination}/pitstop", release_version)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--registry", required=True, help="host:port of the OCI registry")
    parser.add_argument("--version", default="", help="release version (default: pyproject's)")
    parser.add_argument("--insecure", action="store_true", help="plain HTTP to the registry")
    arguments = parser.parse_args(argv)
    try:
        done = release(arguments.registry, arguments.version or None, arguments.insecure)
    except (ReleaseError, image.ImageBuildError) as error:
        print(f"release failed: {error}", file=sys.stderr)
        return 1
    for reference in done.images.values():
        print(f"image {reference}")
    print(f"chart {done.chart} --version {done.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
