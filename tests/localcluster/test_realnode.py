"""The real node's pure parts: why a machine cannot host one, what teardown must compare, and
how a container's files are read from the host (links resolved inside the container's root)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localcluster import realnode
from localcluster.realnode import ContainerProcess, HostSnapshot


def snapshot(**changes: object) -> HostSnapshot:
    values: dict[str, object] = {
        "sysctls": {"kernel/panic": "1"},
        "links": frozenset({"lo", "eth0"}),
        "nft_tables": frozenset({"table ip nat"}),
        "mount_count": 30,
        "cgroup_folders": frozenset({Path("/sys/fs/cgroup/memory/system")}),
        "fixed_paths": frozenset(),
        "processes": frozenset(),
    }
    values.update(changes)
    return HostSnapshot(**values)  # type: ignore[arg-type]


def test_an_unchanged_machine_has_no_differences() -> None:
    assert snapshot().differences(snapshot()) == []


def test_every_kind_of_leftover_is_named() -> None:
    later = snapshot(
        sysctls={"kernel/panic": "10"},
        links=frozenset({"lo", "eth0", "pitstop0"}),
        nft_tables=frozenset({"table ip nat", "table ip pitstop_real_node"}),
        mount_count=31,
        cgroup_folders=frozenset(
            {Path("/sys/fs/cgroup/memory/system"), Path("/sys/fs/cgroup/memory/k8s.io")}
        ),
        fixed_paths=frozenset({"/var/lib/kubelet"}),
        processes=frozenset({"123 containerd-shim"}),
    )
    assert snapshot().differences(later) == [
        "sysctl kernel/panic: 1 -> 10",
        "link left behind: pitstop0",
        "nft table left behind: table ip pitstop_real_node",
        "cgroup folder left behind: /sys/fs/cgroup/memory/k8s.io",
        "path left behind: /var/lib/kubelet",
        "process left behind: 123 containerd-shim",
        "mounts: 30 -> 31",
    ]


def test_a_non_root_user_is_told_exactly_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    reason = realnode.unavailable_reason()
    assert reason is not None and reason.startswith("not root")


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(realnode, "_which", lambda command: None if command == "nft" else "/x")
    assert realnode.unavailable_reason() == (
        "missing host packages: nftables (no apt-get to install them)"
    )


def test_files_are_read_through_links_resolved_in_the_process_root(tmp_path: Path) -> None:
    # Our own process stands in for a container: its root is "/", so an absolute link must be
    # followed from that root, and a relative one from the link's folder.
    (tmp_path / "run" / "secrets").mkdir(parents=True)
    (tmp_path / "run" / "secrets" / "token").write_text("secret")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to(tmp_path / "run")
    (tmp_path / "relative").symlink_to("run/secrets")
    process = ContainerProcess(os.getpid())
    assert process.read_file(f"{tmp_path}/var/run/secrets/token") == "secret"
    assert process.read_file(f"{tmp_path}/relative/token") == "secret"
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(realnode.RealNodeError, match="too many symbolic links"):
        process.read_file(f"{tmp_path}/loop/x")


def test_the_process_status_is_read_from_proc() -> None:
    process = ContainerProcess(os.getpid())
    assert process.user_ids == (os.getuid(), os.geteuid())
    assert process.shares_host_pid_namespace
