"""The host agent's script with a fake boot ID file and a fake reboot command (never a real
reboot): it reboots on the approval the reboot Job writes for this boot, and only then."""

from __future__ import annotations

import configparser
import os
import subprocess
from pathlib import Path

from reboot_helper.main import write_approval

AGENT = Path(__file__).resolve().parents[2] / "contrib" / "host-agent"
SCRIPT = AGENT / "pitstop-host-agent"


def run_agent(tmp_path: Path, directory: Path, boot_id: str) -> tuple[int, str, bool]:
    """(exit code, output, whether the fake reboot command ran)."""
    boot_id_file = tmp_path / "boot_id"
    boot_id_file.write_text(boot_id + "\n")
    marker = tmp_path / "rebooted"
    marker.unlink(missing_ok=True)
    environment = {
        "PATH": os.environ["PATH"],
        "PITSTOP_APPROVAL_DIRECTORY": str(directory),
        "PITSTOP_BOOT_ID_FILE": str(boot_id_file),
        "PITSTOP_REBOOT_COMMAND": f"touch {marker}",
    }
    result = subprocess.run(
        ["/bin/sh", str(SCRIPT)], env=environment, capture_output=True, text=True, timeout=10
    )
    return result.returncode, result.stdout + result.stderr, marker.exists()


def test_reboots_on_the_approval_for_this_boot(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    boot = "6f1b2c3d-0000-4000-8000-000000000001"
    code, output, rebooted = run_agent(tmp_path, directory, boot)  # no directory yet
    assert (code, rebooted) == (0, False), output
    write_approval(directory, boot, node="node-a")  # what the HostAgent Job runs
    code, output, rebooted = run_agent(tmp_path, directory, boot)
    assert code == 0 and rebooted, output
    assert "approval" in output and boot in output


def test_stale_approvals_are_removed_not_acted_on(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    old, current = "old-boot-1", "new-boot-2"
    write_approval(directory, old)
    code, output, rebooted = run_agent(tmp_path, directory, current)
    assert (code, rebooted) == (0, False), output
    assert not (directory / f"reboot-{old}").exists()
    assert "stale" in output


def test_no_approval_no_reboot(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir()
    (directory / "unrelated").write_text("x")
    code, output, rebooted = run_agent(tmp_path, directory, "boot-3")
    assert (code, rebooted) == (0, False), output
    assert (directory / "unrelated").exists()


def test_a_symlinked_approval_is_ignored(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    directory.mkdir()
    target = tmp_path / "elsewhere"
    target.write_text("{}")
    (directory / "reboot-boot-4").symlink_to(target)
    _, output, rebooted = run_agent(tmp_path, directory, "boot-4")
    assert not rebooted, output


def test_malformed_boot_id_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    write_approval(directory, "boot-5")
    code, output, rebooted = run_agent(tmp_path, directory, "../boot 5")
    assert code != 0 and not rebooted, output


def test_units_agree_with_the_script_and_the_chart() -> None:
    path_unit = configparser.ConfigParser(strict=False)
    path_unit.read(AGENT / "pitstop-host-agent.path")
    service = configparser.ConfigParser(strict=False)
    service.optionxform = str  # type: ignore[assignment,method-assign]
    service.read(AGENT / "pitstop-host-agent.service")
    glob = path_unit["Path"]["PathExistsGlob"]
    environment = dict(item.split("=", 1) for item in service["Service"]["Environment"].split())
    directory = environment["PITSTOP_APPROVAL_DIRECTORY"]
    assert glob == f"{directory}/reboot-*"
    values = (AGENT.parents[1] / "charts" / "pitstop" / "values.yaml").read_text()
    assert f"hostAgentDirectory: {directory}\n" in values
    assert service["Service"]["ExecStart"] == "/usr/local/libexec/pitstop-host-agent"
