"""Find or build the control-plane binaries.

Order: `$KUBEBUILDER_ASSETS`, then `$PATH` (only binaries of the pinned Kubernetes minor), then a
cache outside the clone (`$PITSTOP_CACHE` or `${XDG_CACHE_HOME:-~/.cache}/pitstop`). A missing
cache is built from the Go modules with the machine's `go`, atomically (built in a scratch folder
and renamed into place) and under a file lock, so two test runs never build twice and a
half-built cache is never used. Runs with the standard library only: it is called before any
virtual environment exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from localcluster import versions

KUBERNETES_MODULE = "k8s.io/kubernetes"
# kwok's standard stages (paths inside its module): "fast" pods go Running at once.
STAGE_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


class BuildError(RuntimeError):
    """A build step failed; the message names the step, the command and the end of its log."""


def cache_root() -> Path:
    """The folder that holds every cached binary set, outside the clone."""
    explicit = os.environ.get("PITSTOP_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pitstop"


def binary_cache_dir() -> Path:
    return cache_root() / "bin" / versions.cache_key()


def _log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def _is_pinned_kubernetes(path: Path) -> bool:
    """A Kubernetes binary found outside our cache is used only at the pinned minor version."""
    minor = ".".join(versions.KUBERNETES_VERSION.split(".")[:2])  # v1.35
    args = (
        [str(path), "version", "--client"] if path.name == "kubectl" else [str(path), "--version"]
    )
    try:
        output = subprocess.run(args, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(re.escape(minor) + r"\.\d+", output) is not None


def _find_outside_cache(name: str) -> Path | None:
    candidates: list[Path] = []
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        candidates.append(Path(assets) / name)
    found = shutil.which(name)
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        if name.startswith("kube") and not _is_pinned_kubernetes(candidate):
            continue
        return candidate
    return None


def _run(step: str, args: list[str], cwd: Path, log_path: Path, env: dict[str, str]) -> None:
    """Run one build command, appending to its log; a failure raises a BuildError naming it."""
    _log(f"{step}: {' '.join(args)}")
    with log_path.open("a") as log:
        log.write(f"\n$ {' '.join(args)}\n")
        log.flush()
        result = subprocess.run(args, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(
            f"building {step} failed: `{' '.join(args)}` exited {result.returncode}; "
            f"log {log_path}, last lines:\n{tail}"
        )


def _go_env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("GOFLAGS", "-mod=mod")
    env["GOTOOLCHAIN"] = "local"
    env["CGO_ENABLED"] = "0"
    env["GOBIN"] = str(work)
    return env


def _module_dir(module: str, version: str, cwd: Path, env: dict[str, str]) -> Path:
    """Download one module (to read files it ships) and return its folder in the module cache."""
    output = subprocess.run(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if output.returncode != 0:
        raise BuildError(f"go mod download {module}@{version} failed:\n{output.stdout[-2000:]}")
    return Path(json.loads(output.stdout)["Dir"])


def _staging_replaces(kubernetes_dir: Path) -> list[str]:
    """The `replace` lines k8s.io/kubernetes needs when it is required as a module."""
    go_mod = (kubernetes_dir / "go.mod").read_text()
    names = sorted(set(re.findall(r"(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", go_mod)))
    return [f"\t{name} => {name} {versions.KUBERNETES_STAGING_VERSION}" for name in names]


def _build_kubernetes(work: Path, out: Path, log: Path) -> None:
    module = work / "kubernetes-module"
    module.mkdir(parents=True, exist_ok=True)
    env = _go_env(out)
    (module / "go.mod").write_text("module pitstop.local/tools\n\ngo 1.25\n")
    kubernetes_dir = _module_dir(KUBERNETES_MODULE, versions.KUBERNETES_VERSION, module, env)
    replaces = "\n".join(_staging_replaces(kubernetes_dir))
    (module / "go.mod").write_text(
        f"module pitstop.local/tools\n\ngo 1.25\n\nreplace (\n{replaces}\n)\n"
    )
    (module / "tools.go").write_text("package tools\n")
    packages = [
        f"{KUBERNETES_MODULE}/cmd/{name}@{versions.KUBERNETES_VERSION}"
        for name in versions.KUBERNETES_COMMANDS
    ]
    _run("kubernetes modules", ["go", "get", *packages], module, log, env)
    major, minor = versions.KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    prefix = "k8s.io/component-base/version"
    ldflags = (
        f"-s -w -X {prefix}.gitVersion={versions.KUBERNETES_VERSION} "
        f"-X {prefix}.gitMajor={major} -X {prefix}.gitMinor={minor} "
        f"-X {prefix}.gitTreeState=clean"
    )
    for name in versions.KUBERNETES_COMMANDS:
        _run(
            name,
            [
                "go",
                "build",
                "-o",
                str(out / name),
                "-ldflags",
                ldflags,
                f"{KUBERNETES_MODULE}/cmd/{name}",
            ],
            module,
            log,
            env,
        )


def _build_etcd(work: Path, out: Path, log: Path) -> None:
    module = work / "etcd-module"
    module.mkdir(parents=True, exist_ok=True)
    env = _go_env(out)
    (module / "go.mod").write_text("module pitstop.local/etcd\n\ngo 1.25\n")
    (module / "main.go").write_text(
        'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() {\n\tetcdmain.Main(os.Args)\n}\n"
    )
    _run(
        "etcd modules",
        ["go", "get", f"go.etcd.io/etcd/server/v3@{versions.ETCD_VERSION}"],
        module,
        log,
        env,
    )
    _run(
        "etcd", ["go", "build", "-o", str(out / "etcd"), "-ldflags", "-s -w", "."], module, log, env
    )


def _build_installables(work: Path, out: Path, log: Path) -> None:
    env = _go_env(out)
    env["GOFLAGS"] = ""
    for step, package in (
        ("kwok", f"sigs.k8s.io/kwok/cmd/kwok@{versions.KWOK_VERSION}"),
        ("helm", f"helm.sh/helm/v3/cmd/helm@{versions.HELM_VERSION}"),
    ):
        _run(step, ["go", "install", "-ldflags", "-s -w", package], work, log, env)


def build(target: Path) -> None:
    """Build every binary into `target` (which must not exist yet), atomically."""
    if shutil.which("go") is None:
        raise BuildError("no `go` on PATH: install Go >= 1.25, or set KUBEBUILDER_ASSETS")
    work = cache_root() / "build"
    work.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    log = cache_root() / "build.log"
    started = time.monotonic()
    _log(f"building control-plane binaries into {target} (log: {log}); cold: ~8 min")
    try:
        _build_etcd(work, scratch, log)
        _build_installables(work, scratch, log)
        _build_kubernetes(work, scratch, log)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    (scratch / "VERSIONS").write_text(versions.cache_key() + "\n")
    scratch.rename(target)
    _log(f"built in {time.monotonic() - started:.0f} s")


def ensure_registry() -> Path:
    """distribution's `registry` binary, built once from its Go module (niced: a shared machine)."""
    target = cache_root() / "bin" / versions.registry_cache_key()
    binary = target / "registry"
    if binary.is_file():
        return binary
    if shutil.which("go") is None:
        raise BuildError("no `go` on PATH to build the OCI registry")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        scratch = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        env = _go_env(scratch)
        env["GOFLAGS"] = ""
        package = f"{versions.REGISTRY_MODULE}/cmd/registry@{versions.REGISTRY_VERSION}"
        work = cache_root() / "build"
        work.mkdir(parents=True, exist_ok=True)
        try:
            _run(
                "registry",
                ["nice", "-n", "10", "go", "install", "-ldflags", "-s -w", package],
                work,
                cache_root() / "registry-build.log",
                env,
            )
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        scratch.rename(target)
    return binary


def ensure_cache() -> Path:
    """Return the complete cached binary folder, building it first if it is missing."""
    target = binary_cache_dir()
    if (target / "VERSIONS").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "VERSIONS").is_file():
            build(target)
    return target


def resolve(names: tuple[str, ...] = versions.CONTROL_PLANE_BINARIES) -> dict[str, Path]:
    """Map each binary name to a usable executable, building the cache only when needed."""
    found = {name: _find_outside_cache(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    resolved = {name: path for name, path in found.items() if path is not None}
    if missing:
        cache = ensure_cache()
        for name in missing:
            resolved[name] = cache / name
    return resolved


def kwok_stage_files() -> list[Path]:
    """kwok's stage files, copied once from its Go module into the cache."""
    key = hashlib.sha256("|".join(STAGE_FILES).encode()).hexdigest()[:8]
    folder = cache_root() / "kwok-stages" / f"{versions.KWOK_VERSION}-{key}"
    files = [folder / Path(name).name for name in STAGE_FILES]
    if all(path.is_file() for path in files):
        return files
    if shutil.which("go") is None:
        raise BuildError("no `go` on PATH to fetch kwok's stage files")
    scratch = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    scratch.mkdir(parents=True, exist_ok=True)
    env = _go_env(scratch)
    env["GOFLAGS"] = ""
    kwok_dir = _module_dir("sigs.k8s.io/kwok", versions.KWOK_VERSION, scratch, env)
    for name in STAGE_FILES:
        shutil.copyfile(kwok_dir / name, scratch / Path(name).name)
    try:
        scratch.rename(folder)
    except OSError:  # another run finished first; its copy is as good as ours
        shutil.rmtree(scratch, ignore_errors=True)
    return files


def main() -> int:
    """`python -m localcluster.binaries`: build (if needed) and print where the binaries are."""
    try:
        for name, path in sorted(resolve().items()):
            print(f"{name}\t{path}")
        print(f"kwok-stages\t{kwok_stage_files()[0].parent}")
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
