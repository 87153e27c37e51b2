"""`python -m detector.rpm_check`: "reboot needed" on RHEL-family hosts, unprivileged.

RHEL, Fedora, Rocky, Alma, Amazon Linux write no `/var/run/reboot-required`; kured users run
`needs-restarting -r` as a privileged sentinel command. This sidecar of the detector pod answers
the same question from read-only data, as `needs-restarting -r` does: a reboot is needed when
a core package (the kernel, glibc, systemd, dbus, linux-firmware... the list below, plus the
names in the host's `/etc/dnf/plugins/needs-restarting.d/*.conf`) was installed after the boot.

- Installed packages: the host's rpm database, mounted read-only. An sqlite database
  (`rpmdb.sqlite`: RHEL 9+, Fedora 33+, Amazon Linux 2023) is read with Python's sqlite3 and
  rpm's header format, so the detector's own image is enough; any other (RHEL 8's Berkeley DB)
  is asked through the `rpm` command, which needs an image that has it.
- Boot time: `btime` in /proc/stat (the kernel is the host's: a container sees the same).

It writes the sentinel the detector watches, and `<sentinel>.pkgs` (the packages, the reason the
detector reports), into a volume both containers share, and removes them when no reboot is
needed (after the reboot, the same pod runs again with the same volume). Standard library only,
no API access, no capability: it must stay as small as the detector.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

LOG = logging.getLogger("pitstop.rpm_check")

# dnf-plugins-core's needs-restarting list (NEED_REBOOT), with the kernel's split packages and
# the CPU microcode, which newer releases also name.
CORE_PACKAGES = (
    "kernel",
    "kernel-core",
    "kernel-rt",
    "kernel-rt-core",
    "glibc",
    "linux-firmware",
    "systemd",
    "dbus",
    "dbus-broker",
    "dbus-daemon",
    "microcode_ctl",
)
RPM_TAG_NAME = 1000
RPM_TAG_INSTALLTIME = 1008
RPM_TYPE_INT32 = 4
RPM_TYPE_STRING = 6
SQLITE_FILE = "rpmdb.sqlite"
PACKAGES_SUFFIX = ".pkgs"  # the detector reads the reason from here (Ubuntu's convention)


class RpmDatabaseError(RuntimeError):
    """The rpm database cannot be read: nothing is decided (the sentinel is left as it is)."""


def boot_time(proc_stat: Path = Path("/proc/stat")) -> int:
    """Seconds since the epoch at which the kernel booted."""
    for line in proc_stat.read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise RuntimeError(f"no btime line in {proc_stat}")


def extra_packages(directory: Path) -> set[str]:
    """Package names from needs-restarting.d/*.conf files (one per line), as dnf reads them."""
    names: set[str] = set()
    for path in sorted(glob.glob(str(directory / "*.conf"))):
        with contextlib.suppress(OSError):
            names.update(line.strip() for line in Path(path).read_text().splitlines())
    return {name for name in names if name and not name.startswith("#")}


def header_fields(blob: bytes) -> tuple[str, int]:
    """(name, install time) from an rpm header as the database stores it (no lead, no magic):
    index count, data size, then 16-byte entries (tag, type, offset, count), then the data."""
    if len(blob) < 8:
        raise RpmDatabaseError("rpm header too short")
    count, size = struct.unpack(">II", blob[:8])
    data_start = 8 + 16 * count
    if data_start + size > len(blob):
        raise RpmDatabaseError("rpm header truncated")
    data = blob[data_start : data_start + size]
    name, installed = "", 0
    for index in range(count):
        tag, kind, offset, _items = struct.unpack(">iIiI", blob[8 + 16 * index : 24 + 16 * index])
        if tag == RPM_TAG_NAME and kind == RPM_TYPE_STRING:
            name = data[offset : data.index(b"\0", offset)].decode("utf-8", "replace")
        elif tag == RPM_TAG_INSTALLTIME and kind == RPM_TYPE_INT32:
            (installed,) = struct.unpack(">I", data[offset : offset + 4])
    return name, installed


def _query_sqlite(database: Path, names: Sequence[str]) -> dict[str, int]:
    marks = ",".join("?" * len(names))
    query = f"SELECT p.blob FROM Packages p JOIN Name n ON n.hnum = p.hnum WHERE n.key IN ({marks})"
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = connection.execute(query, list(names)).fetchall()
    finally:
        connection.close()
    latest: dict[str, int] = {}
    for (blob,) in rows:
        name, installed = header_fields(bytes(blob))
        latest[name] = max(latest.get(name, 0), installed)
    return latest


def installed_sqlite(dbpath: Path, names: Sequence[str]) -> dict[str, int]:
    """Install time (latest, when several versions are installed) of each named package."""
    database = dbpath / SQLITE_FILE
    try:
        return _query_sqlite(database, names)
    except sqlite3.Error as error:
        # A read-only mount of a database in WAL mode without its -shm file cannot be opened in
        # place: read a private copy (with its WAL, so the last transaction is seen).
        LOG.debug("reading %s in place failed (%s); reading a copy", database, error)
    with tempfile.TemporaryDirectory(prefix="rpmdb-") as scratch:
        for suffix in ("", "-wal"):
            source = Path(f"{database}{suffix}")
            if source.exists():
                shutil.copyfile(source, Path(scratch) / f"{SQLITE_FILE}{suffix}")
        try:
            return _query_sqlite(Path(scratch) / SQLITE_FILE, names)
        except sqlite3.Error as error:
            raise RpmDatabaseError(f"cannot read {database}: {error}") from error


def installed_rpm_command(dbpath: Path, names: Sequence[str]) -> dict[str, int]:
    """The same answer from the `rpm` command (any database format rpm itself reads)."""
    if shutil.which("rpm") is None:
        raise RpmDatabaseError(
            f"{dbpath} has no {SQLITE_FILE} and this image has no rpm command to read it"
        )
    result = subprocess.run(
        ["rpm", "--dbpath", str(dbpath), "-q", "--qf", "%{NAME} %{INSTALLTIME}\\n", *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    latest: dict[str, int] = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        # "package X is not installed" lines are answers too, not errors.
        if len(parts) == 2 and parts[1].isdigit():
            latest[parts[0]] = max(latest.get(parts[0], 0), int(parts[1]))
    if result.returncode != 0 and not latest and "is not installed" not in result.stdout:
        raise RpmDatabaseError(f"rpm -q failed: {result.stderr.strip()[:300]}")
    return latest


def installed_packages(dbpath: Path, names: Sequence[str]) -> dict[str, int]:
    if (dbpath / SQLITE_FILE).exists():
        return installed_sqlite(dbpath, names)
    return installed_rpm_command(dbpath, names)


def needing_reboot(installed: Mapping[str, int], booted: int) -> list[str]:
    """needs-restarting -r: the core packages installed after the boot."""
    return sorted(name for name, when in installed.items() if when > booted)


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as handle:
        handle.write(text)
        temporary = Path(handle.name)
    os.chmod(temporary, 0o644)
    temporary.replace(path)


def report(sentinel: Path, packages: Iterable[str]) -> bool:
    """Write (packages first, then the sentinel) or remove (sentinel first) the files; True if
    a reboot is needed."""
    names = list(packages)
    listing = Path(f"{sentinel}{PACKAGES_SUFFIX}")
    if names:
        _write_atomically(listing, "".join(f"{name}\n" for name in names))
        if not sentinel.exists():
            _write_atomically(sentinel, "*** System restart required ***\n")
        return True
    sentinel.unlink(missing_ok=True)
    listing.unlink(missing_ok=True)
    return False


def check_once(
    dbpath: Path, sentinel: Path, names: Sequence[str], proc_stat: Path = Path("/proc/stat")
) -> list[str]:
    """One decision, written to the shared volume; returns the packages that need the reboot."""
    packages = needing_reboot(installed_packages(dbpath, names), boot_time(proc_stat))
    report(sentinel, packages)
    return packages


def _database_stamp(dbpath: Path) -> tuple[tuple[str, int, int], ...]:
    stamps = []
    for path in sorted(dbpath.glob("*")):
        with contextlib.suppress(OSError):
            status = path.stat()
            stamps.append((path.name, status.st_mtime_ns, status.st_size))
    return tuple(stamps)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m detector.rpm_check",
        description="Write the reboot sentinel when a core package was installed after boot.",
    )
    parser.add_argument("--dbpath", default="/host/var/lib/rpm", help="the host's rpm database")
    parser.add_argument(
        "--sentinel", default="/sentinel/reboot-required", help="the file the detector watches"
    )
    parser.add_argument(
        "--config-dir",
        default="/host/etc/dnf/plugins/needs-restarting.d",
        help="more package names, as needs-restarting reads them",
    )
    parser.add_argument("--interval", type=float, default=300.0, help="seconds between checks")
    parser.add_argument("--once", action="store_true", help="check once and exit (0 or 1)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    dbpath, sentinel = Path(arguments.dbpath), Path(arguments.sentinel)
    seen: tuple[tuple[str, int, int], ...] | None = None
    while True:
        stamp = _database_stamp(dbpath)
        if stamp != seen:  # the database changed (or first pass): decide again
            names = sorted(set(CORE_PACKAGES) | extra_packages(Path(arguments.config_dir)))
            try:
                packages = check_once(dbpath, sentinel, names)
            except (RpmDatabaseError, OSError) as error:
                LOG.error("cannot decide: %s (the sentinel is left as it is)", error)
                if arguments.once:
                    return 2
            else:
                seen = stamp
                LOG.info(
                    "reboot %s%s",
                    "required: installed after boot: " if packages else "not required",
                    ", ".join(packages),
                )
                if arguments.once:
                    return 1 if packages else 0
        time.sleep(arguments.interval)


if __name__ == "__main__":
    sys.exit(main())
