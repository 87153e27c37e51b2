"""A real rpm database for tests: tiny packages built with rpmbuild, recorded with rpm --justdb
(Debian's `rpm` package has both), in a directory the test owns."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SPEC = """\
Name: {name}
Version: {version}
Release: 1
Summary: a test package
License: MIT
BuildArch: noarch
%description
A test package.
%files
"""


def require_rpm_tools() -> None:
    missing = [tool for tool in ("rpm", "rpmbuild") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian: apt-get install rpm)")


def build_package(workdir: Path, name: str, version: str = "1.0") -> Path:
    spec = workdir / f"{name}.spec"
    spec.write_text(SPEC.format(name=name, version=version))
    top = workdir / "rpmbuild"
    subprocess.run(
        [
            "rpmbuild",
            "--define",
            f"_topdir {top}",
            "--define",
            "_build_id_links none",
            "-bb",
            str(spec),
        ],
        check=True,
        capture_output=True,
    )
    return next((top / "RPMS" / "noarch").glob(f"{name}-{version}-1.noarch.rpm"))


def rpm_database(workdir: Path, packages: list[str]) -> Path:
    """A fresh database (`rpm --initdb`) holding these packages, installed now."""
    database = workdir / "var-lib-rpm"
    database.mkdir()
    subprocess.run(["rpm", "--dbpath", str(database), "--initdb"], check=True, capture_output=True)
    for name in packages:
        install(database, build_package(workdir, name))
    return database


def install(database: Path, package: Path) -> None:
    subprocess.run(
        [
            "rpm",
            "--dbpath",
            str(database),
            "-i",
            "--justdb",
            "--nodeps",
            "--ignorearch",
            str(package),
        ],
        check=True,
        capture_output=True,
    )
