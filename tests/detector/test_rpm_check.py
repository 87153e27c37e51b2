"""The RHEL-family sidecar (detector/rpm_check.py) on a real rpm database built in the test."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detector import rpm_check
from tests.detector.rpm_database import build_package, install, require_rpm_tools, rpm_database


@pytest.fixture(autouse=True)
def rpm_tools() -> None:
    require_rpm_tools()


def proc_stat(tmp_path: Path, booted: float) -> Path:
    path = tmp_path / "stat"
    path.write_text(f"cpu  1 2 3 4\nbtime {int(booted)}\nprocesses 10\n")
    return path


def test_a_core_package_installed_after_boot_needs_a_reboot(tmp_path: Path) -> None:
    database = rpm_database(tmp_path, ["glibc", "bash"])
    sentinel = tmp_path / "shared" / "reboot-required"
    sentinel.parent.mkdir()
    booted_before = proc_stat(tmp_path, time.time() - 3600)
    names = rpm_check.CORE_PACKAGES

    assert rpm_check.check_once(database, sentinel, names, booted_before) == ["glibc"]
    assert sentinel.exists()
    assert Path(f"{sentinel}.pkgs").read_text() == "glibc\n"

    # After the reboot (booted after the install): no reboot needed, both files gone.
    booted_after = proc_stat(tmp_path, time.time() + 5)
    assert rpm_check.check_once(database, sentinel, names, booted_after) == []
    assert not sentinel.exists() and not Path(f"{sentinel}.pkgs").exists()


def test_packages_that_need_no_reboot_and_names_from_the_config_directory(
    tmp_path: Path,
) -> None:
    database = rpm_database(tmp_path, ["bash", "openssl-libs"])
    sentinel = tmp_path / "reboot-required"
    booted = proc_stat(tmp_path, time.time() - 3600)
    assert rpm_check.check_once(database, sentinel, rpm_check.CORE_PACKAGES, booted) == []
    assert not sentinel.exists()
    config = tmp_path / "needs-restarting.d"
    config.mkdir()
    (config / "site.conf").write_text("openssl-libs\n")
    names = sorted(set(rpm_check.CORE_PACKAGES) | rpm_check.extra_packages(config))
    assert rpm_check.check_once(database, sentinel, names, booted) == ["openssl-libs"]


def test_the_sqlite_reader_and_the_rpm_command_agree(tmp_path: Path) -> None:
    database = rpm_database(tmp_path, ["kernel-core", "systemd"])
    install(database, build_package(tmp_path, "kernel-core", "2.0"))  # two kernels installed
    names = ["kernel-core", "systemd", "dbus"]
    direct = rpm_check.installed_sqlite(database, names)
    command = rpm_check.installed_rpm_command(database, names)
    assert direct == command
    assert set(direct) == {"kernel-core", "systemd"}
    assert all(abs(when - time.time()) < 600 for when in direct.values())


def test_a_database_that_cannot_be_opened_in_place_is_read_from_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = rpm_database(tmp_path, ["glibc"])
    real_query = rpm_check._query_sqlite
    opened: list[Path] = []

    def read_only_mount(path: Path, names: list[str]) -> dict[str, int]:
        # A WAL database on a read-only mount without its -shm file (root here ignores modes).
        opened.append(path)
        if path.parent == database:
            raise sqlite3.OperationalError("unable to open database file")
        return real_query(path, names)

    monkeypatch.setattr(rpm_check, "_query_sqlite", read_only_mount)
    assert set(rpm_check.installed_sqlite(database, ["glibc"])) == {"glibc"}
    assert len(opened) == 2 and opened[1].parent != database


def test_the_command_line_once(tmp_path: Path) -> None:
    database = rpm_database(tmp_path, ["dbus-broker"])
    sentinel = tmp_path / "reboot-required"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "detector.rpm_check",
            "--once",
            "--dbpath",
            str(database),
            "--sentinel",
            str(sentinel),
            "--config-dir",
            str(tmp_path / "none"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # The real /proc/stat: the package was installed seconds ago, after this machine booted.
    assert result.returncode == 1, result.stderr
    assert "dbus-broker" in result.stderr and sentinel.exists()
