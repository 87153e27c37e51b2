"""Build Pitstop's container images with podman, once per content: `python -m localcluster.image`.

One Dockerfile, two targets: the brain's image (localhost/pitstop: brain, CLI, reboot helper) and
the detector's slim image (localhost/pitstop-detector), both tagged with the same content hash.

There is no Docker engine on these machines, and podman needs two workarounds that were found by
trial: the `runc` runtime (crun is refused) and explicit ulimits (the default rlimits are
refused). The base image is made from Debian's own packages with debootstrap, because no
registry for base images is reachable; a user with a registry builds with the Dockerfile's
default base instead. The build is skipped when the content hash of everything that goes into
the image (Dockerfile, lock file, project metadata, Python sources) names an image that exists.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localcluster.binaries import cache_root

REPOSITORY = Path(__file__).resolve().parents[1]
BASE_IMAGE = "localhost/pitstop-base:bookworm"
# Dockerfile target -> image name (without a registry; localhost/ here, REGISTRY/ in a release).
IMAGE_NAMES = {"brain": "pitstop", "detector": "pitstop-detector"}
TARGETS = tuple(IMAGE_NAMES)
DEBIAN_SUITE = "bookworm"
# python3 and its venv module run Pitstop; passwd gives useradd; util-linux (nsenter) is in
# every Debian base already and is named to make the need explicit.
BASE_PACKAGES = ("python3", "python3-venv", "passwd", "util-linux")
HOST_PACKAGES = {"podman": "podman", "debootstrap": "debootstrap", "runc": "runc"}
# The flags every podman build and run needs on these machines (see the module docstring).
RUNTIME_FLAGS = ("--runtime", "runc")
ULIMIT_FLAGS = ("--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# What goes into the image: a change to any of these makes a new tag.
HASHED_FILES = ("Dockerfile", "uv.lock", "pyproject.toml", "README.md")
HASHED_PACKAGES = ("brain", "detector", "pitstop")


class ImageBuildError(RuntimeError):
    """A step of the image build failed; the message says which, and where the log is."""


@dataclass(frozen=True)
class BuiltImage:
    reference: str  # localhost/pitstop:<content hash> (or localhost/pitstop-detector:...)
    content_hash: str
    size_bytes: int
    build_seconds: float  # 0.0 when the cached image was used
    cached: bool
    target: str = "brain"


def image_reference(target: str, digest: str) -> str:
    return f"localhost/{IMAGE_NAMES[target]}:{digest[:16]}"


def _log(message: str) -> None:
    print(f"[localcluster.image] {message}", file=sys.stderr, flush=True)


def image_cache_dir() -> Path:
    return cache_root() / "image"


def content_hash(repository: Path = REPOSITORY) -> str:
    """sha256 over the relative path and bytes of every file that goes into the image."""
    digest = hashlib.sha256()
    files = [repository / name for name in HASHED_FILES]
    for package in HASHED_PACKAGES:
        files.extend(sorted((repository / package).rglob("*.py")))
    for path in files:
        digest.update(str(path.relative_to(repository)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    digest.update(BASE_IMAGE.encode())
    return digest.hexdigest()


def _run(
    arguments: Sequence[str], what: str, log: Path | None = None, timeout: float = 3600
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise ImageBuildError naming `what` and the output's tail."""
    try:
        result = subprocess.run(
            list(arguments), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ImageBuildError(f"{what}: {error}") from error
    if log is not None:
        with log.open("a") as handle:
            handle.write(f"$ {' '.join(arguments)}\n{result.stdout}{result.stderr}\n")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        where = f" (full log: {log})" if log else ""
        raise ImageBuildError(f"{what} failed with exit code {result.returncode}{where}:\n{tail}")
    return result


def ensure_host_tools(log: Path | None = None) -> None:
    """apt-get install podman, debootstrap and runc where missing (the machines run as root)."""
    missing = [package for command, package in HOST_PACKAGES.items() if not shutil.which(command)]
    if not missing:
        return
    if not shutil.which("apt-get"):
        raise ImageBuildError(f"{', '.join(missing)} missing and no apt-get to install them")
    _log(f"installing {' '.join(missing)} with apt-get")
    _run(["apt-get", "update", "-qq"], "apt-get update", log, timeout=600)
    _run(
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", *missing],
        f"apt-get install {' '.join(missing)}",
        log,
        timeout=1200,
    )


def podman(*arguments: str) -> list[str]:
    """A podman command line with the runtime this machine needs."""
    return ["podman", *RUNTIME_FLAGS, *arguments]


def image_exists(reference: str) -> bool:
    return subprocess.run(podman("image", "exists", reference), check=False).returncode == 0


def ensure_base_image(log: Path | None = None) -> None:
    """Debian bookworm (minbase plus python3) imported as BASE_IMAGE, made once."""
    if image_exists(BASE_IMAGE):
        return
    _log(f"making {BASE_IMAGE} with debootstrap (about a minute)")
    with tempfile.TemporaryDirectory(prefix="pitstop-base-", dir=image_cache_dir()) as folder:
        root = Path(folder) / "root"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(root),
            ],
            "debootstrap of the base image",
            log,
            timeout=1800,
        )
        # Package caches and lists have no use in an image.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            imported = subprocess.run(
                podman("import", "-", BASE_IMAGE),
                stdin=tar.stdout,
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise ImageBuildError(f"podman import of the base image failed: {imported.stderr}")


def image_size(reference: str) -> int:
    result = _run(podman("image", "inspect", "--format", "{{.Size}}", reference), "inspect")
    return int(result.stdout.strip())


@contextmanager
def _build_lock() -> Iterator[None]:
    """One build at a time on this machine (parallel test sessions share the cache)."""
    image_cache_dir().mkdir(parents=True, exist_ok=True)
    with (image_cache_dir() / "build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_images(repository: Path = REPOSITORY, force: bool = False) -> dict[str, BuiltImage]:
    """Both images for the current sources (target -> image); the second reuses the build stage."""
    return {target: build_image(repository, force, target) for target in TARGETS}


def build_image(
    repository: Path = REPOSITORY, force: bool = False, target: str = "brain"
) -> BuiltImage:
    """One target's image for the current sources: built with podman, or the cached one."""
    digest = content_hash(repository)
    reference = image_reference(target, digest)
    with _build_lock():
        if not force and shutil.which("podman") and image_exists(reference):
            size = image_size(reference)
            return BuiltImage(reference, digest, size, 0.0, cached=True, target=target)
        log = image_cache_dir() / f"build-{target}.log"
        log.write_text("")
        ensure_host_tools(log)
        ensure_base_image(log)
        _log(f"building {reference} (log: {log})")
        started = time.monotonic()
        volumes: list[str] = []
        if CA_BUNDLE.exists():
            # Lets the build reach the package index through this machine's trust store.
            volumes = ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        _run(
            podman(
                "build",
                *ULIMIT_FLAGS,
                "--network",
                "host",
                *volumes,
                "--build-arg",
                f"BASE={BASE_IMAGE}",
                "--label",
                f"dev.pitstop.content-hash={digest}",
                "--target",
                target,
                "-t",
                reference,
                "-f",
                str(repository / "Dockerfile"),
                str(repository),
            ),
            "podman build",
            log,
        )
        seconds = time.monotonic() - started
        size = image_size(reference)
        built = BuiltImage(reference, digest, size, seconds, cached=False, target=target)
        (image_cache_dir() / f"{target}-{digest[:16]}.json").write_text(
            json.dumps(built.__dict__, indent=2) + "\n"
        )
        return built


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="build even if the image exists")
    arguments = parser.parse_args(argv)
    try:
        images = build_images(force=arguments.force)
    except ImageBuildError as error:
        print(f"image build failed: {error}", file=sys.stderr)
        return 1
    for built in images.values():
        state = "cached" if built.cached else f"built in {built.build_seconds:.0f} s"
        print(f"{built.reference} ({built.size_bytes / 2**20:.0f} MiB, {state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
