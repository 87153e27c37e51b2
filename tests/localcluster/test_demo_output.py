"""What the demo prints, from a scripted sequence of lock versions: no cluster needed.

The progress counter must say what the lock says (never more than the budget when the lock
holds no more), and a long transition line is wrapped, never cut.
"""

from __future__ import annotations

import re

import pytest
from kubernetes import client

from localcluster.demo import WINDOW, FlagWatcher, Printer, Rollout, wrap
from localcluster.observe import LockObserver, LockSnapshot

BUDGET = 2
JOB = "pitstop-reboot/reboot-node-01-ec9fdeb874"
COUNTER = re.compile(r"\[done\s+\d+/\d+ \| busy (\d+)\]\s+(\S+)\s+\S+\s+(\S+)")


def version(at: float, leases: dict[str, str], completed: tuple[str, ...] = ()) -> LockSnapshot:
    """A lock version: node -> phase for the demo's window, and the nodes completed so far."""
    return LockSnapshot(
        at,
        {node: {"window": WINDOW, "phase": phase, "message": ""} for node, phase in leases.items()},
        {
            WINDOW: {
                "completed": [{"node": n, "result": "Rebooted", "message": "ok"} for n in completed]
            }
        },
    )


# A rollout with budget 2 and three nodes, as the brain writes it: the write that frees
# node-01's slot also admits node-03 (the hand-off rides on the release).
LOCK_VERSIONS = [
    version(1.0, {"node-01": "Draining", "node-02": "Draining"}),
    version(2.0, {"node-01": "Rebooting", "node-02": "Draining"}),
    version(3.0, {"node-01": "WaitingForNode", "node-02": "Rebooting"}),
    version(4.0, {"node-01": "HealthCheck", "node-02": "WaitingForNode"}),
    version(5.0, {"node-02": "WaitingForNode", "node-03": "Draining"}, ("node-01",)),
    version(6.0, {"node-02": "HealthCheck", "node-03": "Rebooting"}, ("node-01",)),
    version(7.0, {"node-03": "Rebooting"}, ("node-01", "node-02")),
    version(8.0, {}, ("node-01", "node-02", "node-03")),
]


def test_the_counter_is_the_lock_s_count_never_above_the_budget(
    capsys: pytest.CaptureFixture[str],
) -> None:
    api = client.ApiClient(client.Configuration())  # never called: no status reads here
    observer = LockObserver(api, "pitstop-system")
    flags = FlagWatcher(api)
    nodes = ["node-01", "node-02", "node-03"]
    zones = {"node-01": "zone-a", "node-02": "zone-b", "node-03": "zone-a"}
    rollout = Rollout(api, observer, flags, zones, nodes, Printer(quiet=False, width=200))
    seen: list[tuple[int, str, str]] = []
    for lock in LOCK_VERSIONS:
        observer.snapshots.append(lock)
        rollout.replay()
        for line in capsys.readouterr().out.splitlines():
            match = COUNTER.search(line)
            assert match, line
            busy, node, phase = int(match.group(1)), match.group(2), match.group(3)
            # Each line shows the lock version it comes from.
            assert busy == len(lock.in_maintenance(WINDOW)) <= BUDGET, line
            seen.append((busy, node, phase))
    # The freed slot is shown before the node admitted in the same write.
    assert seen.index((2, "node-01", "Done")) < seen.index((2, "node-03", "Draining"))
    assert [phase for _, node, phase in seen if node == "node-01"] == [
        "Draining",
        "Rebooting",
        "WaitingForNode",
        "HealthCheck",
        "Done",
    ]
    assert rollout.done_count() == 3 and rollout.busy() == 0


def test_a_long_transition_wraps_at_spaces_and_keeps_the_job_name_whole(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reason = f"drained node node-01: 3 pods evicted; reboot Job {JOB} created"
    for width in (60, 80, 100, 120, 200):
        Printer(quiet=False, width=width).transition(
            "node-01", "zone-a", "WaitingForNode", reason, "[done  0/8 | busy 2]"
        )
        lines = capsys.readouterr().out.splitlines()
        assert all(len(line) <= width for line in lines), (width, lines)
        assert " ".join(" ".join(line.split()) for line in lines).endswith(reason), lines
        assert any(JOB in line for line in lines), lines
        if width >= 120:  # wide enough for the Job name under the text: it keeps its column
            start = lines[0].index("drained")
            assert all(line[:start].isspace() for line in lines[1:]), lines
        else:
            assert all(line.startswith("    ") for line in lines[1:]), lines
        assert (len(lines) == 1) == (width == 200), lines


def test_a_word_wider_than_the_line_stands_whole_on_its_own_line() -> None:
    lines = wrap("head ", f"reboot Job {JOB} created", 20)
    assert lines[:2] == ["head reboot Job", f"    {JOB}"], lines
    assert lines[-1] == "    created", lines


def test_output_that_is_not_a_terminal_is_not_wrapped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = f"drained node node-01: 3 pods evicted; reboot Job {JOB} created"
    monkeypatch.delenv("COLUMNS", raising=False)
    Printer(quiet=False).transition("node-01", "zone-a", "WaitingForNode", reason, "[busy 2]")
    monkeypatch.setenv("COLUMNS", "90")
    Printer(quiet=False).transition("node-01", "zone-a", "WaitingForNode", reason, "[busy 2]")
    first, *wrapped = capsys.readouterr().out.splitlines()
    assert first.endswith(reason)
    assert len(wrapped) == 2 and all(len(line) <= 90 for line in wrapped), wrapped
