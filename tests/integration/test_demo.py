"""`make demo`'s code path, run small and non-interactively, as a newcomer would run it.

The demo starts its own control plane, brain and detectors; these tests read what it prints and
the summary it writes, and check that it leaves no process behind (normal end and Ctrl-C).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

REPOSITORY = Path(__file__).resolve().parents[2]
SMALL = ["--nodes", "4", "--zones", "2", "--budget", "2", "--per-zone", "1", "--flagged", "3"]
FLOW = ["Flagged", "Draining", "Rebooting", "WaitingForNode", "HealthCheck", "Done"]
COLUMNS = 100  # the terminal width the demo is told ($COLUMNS): its lines wrap to it


def demo_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "localcluster.demo", *SMALL, *arguments]


def processes_using(folder: str) -> list[str]:
    """Processes (other than this one) whose command line or environment names `folder`:
    the control plane's binaries name it in their flags, the brain and the detectors in
    KUBECONFIG."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if folder.encode() in command or folder.encode() in environment:
            readable = command.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name}: {readable}")
    return found


def work_folder(output: str) -> str:
    match = re.search(r"work folder (\S+)", output)
    assert match, output
    return match.group(1)


def wait_until_gone(folder: str, timeout: float = 15.0) -> list[str]:
    """Processes killed by their process group may take a moment to disappear from /proc."""
    deadline = time.monotonic() + timeout
    left = processes_using(folder)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_using(folder)
    return left


def transitions(output: str) -> dict[str, list[str]]:
    """node -> the phases its transition lines show, in order."""
    seen: dict[str, list[str]] = {}
    pattern = re.compile(
        r"^\d\d:\d\d:\d\d\s+[\d.]+s\s+\[done\s+\d+/\d+ \| busy \d+\]\s+(\S+)\s+\S+\s+(\S+)"
    )
    for line in output.splitlines():
        match = pattern.match(line)
        if match:
            seen.setdefault(match.group(1), []).append(match.group(2))
    return seen


def printed_transitions(output: str) -> list[list[str]]:
    """Each transition line (it starts with the time) with its continuation lines."""
    entries: list[list[str]] = []
    for line in output.partition("\nSummary\n")[0].splitlines():
        if re.match(r"^\d\d:\d\d:\d\d\s", line):
            entries.append([line])
        elif entries and line.startswith("    "):
            entries[-1].append(line)
    return entries


def test_demo_reboots_every_flagged_node_within_budget_and_leaves_nothing(tmp_path: Path) -> None:
    summary_file = tmp_path / "summary.json"
    started = time.monotonic()
    result = subprocess.run(
        demo_command("--summary-json", str(summary_file), "--timeout", "180"),
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "COLUMNS": str(COLUMNS)},
    )
    elapsed = time.monotonic() - started
    output = result.stdout
    (tmp_path / "output.txt").write_text(output)
    assert result.returncode == 0, output + result.stderr
    folder = work_folder(output)
    assert wait_until_gone(folder) == []
    assert not Path(folder).exists(), "the work folder of a good run is removed"

    summary: dict[str, Any] = json.loads(summary_file.read_text())
    assert summary["ok"] is True
    assert summary["flagged"] == 3 and summary["rebooted"] == 3
    flagged = [row["node"] for row in summary["nodes"]]
    assert flagged == ["node-01", "node-02", "node-03"]
    for row in summary["nodes"]:
        assert row["result"] == "Rebooted", row
        assert row["flag_cleared"], f"{row['node']}: its detector did not clear the flag"
        for column in ("queued", "drain", "reboot", "hand_off"):
            assert row[column] is not None and row[column] >= 0, row
        # The host goes down only after a delay once its Job exists, and stays down a while.
        assert row["reboot"] >= 2.0, row
    # Budget 2, one per zone, three nodes over two zones: two at once at most, and the
    # rollout did use both slots (else it would not show a rolling reboot at all).
    assert summary["peak_in_maintenance"] <= summary["budget"] == 2
    assert summary["peak_per_zone"] <= summary["per_zone_budget"] == 1
    assert summary["peak_in_maintenance"] == 2
    work = sum(row["drain"] + row["reboot"] for row in summary["nodes"])
    assert summary["ideal_seconds"] == pytest.approx(work / 2, rel=1e-6)
    assert summary["wall_seconds"] >= summary["ideal_seconds"] * 0.9
    assert summary["wall_seconds"] < elapsed

    # What the terminal showed: how to watch, every node's flow in order, the table.
    assert "kubectl get nmw -w" in output and "export KUBECONFIG=" in output
    assert re.search(r"http://127\.0\.0\.1:\d+/metrics", output)
    flows = transitions(output)
    for node in flagged:
        # The lock's phases in their order, for the node's last admission (a drain that the
        # brain aborted sends the node back to Pending first: that is allowed, and shown).
        phases = flows.get(node, [])
        last = len(phases) - phases[::-1].index("Draining") - 1 if "Draining" in phases else 0
        # A node whose health gate passed as it returned goes to Done in the same lock write:
        # no HealthCheck of its own.
        flow = FLOW[1:] if "HealthCheck" in phases[last:] else FLOW[1:4] + FLOW[5:]
        assert [phase for phase in phases[last:] if phase in FLOW[1:]] == flow, output
        assert "Flagged" in phases and "Unflagged" in phases, output
    assert "node-04" not in flows, "a node nobody flagged is left alone"
    # The counter is the lock's: never more nodes busy than the budget, in any line.
    counters = [int(busy) for busy in re.findall(r"\| busy (\d+)\]", output)]
    assert counters and max(counters) <= 2, output
    # Long lines wrap to the terminal's width at spaces; nothing is cut, Job names stay whole.
    entries = printed_transitions(output)
    assert entries and all(len(line) <= COLUMNS for entry in entries for line in entry), output
    assert not any(entry[-1].endswith("...") for entry in entries), output
    joined = " ".join(output.split())
    for node in flagged:
        job = rf"reboot Job pitstop-reboot/reboot-{node}-[0-9a-z-]+ (created|already exists)"
        assert re.search(job, joined), f"{node}'s reboot Job is not shown whole:\n{output}"
    for node in flagged:
        assert re.search(rf"^\s+{node}\s+zone-\w\s+Rebooted\s", output, re.MULTILINE), output
    assert re.search(r"wall time: [\d.]+s\s+ideal N x \(drain \+ reboot\) / 2: [\d.]+s", output)
    assert "most nodes in maintenance at once: 2 (budget 2)" in output


def test_ctrl_c_during_the_rollout_stops_everything(tmp_path: Path) -> None:
    process = subprocess.Popen(
        demo_command("--timeout", "180"),
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line)
            if re.search(r"\sDraining(\s|$)", line):  # under way: brain, detectors, hosts busy
                break
        else:
            pytest.fail("the rollout never started:\n" + "".join(lines))
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + rest
    assert process.returncode == 130, output
    assert "Interrupted." in output and "Stopped" in output
    assert "Summary" not in output
    folder = work_folder(output)
    assert wait_until_gone(folder) == [], output
