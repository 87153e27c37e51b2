"""bench/scale.py on a small cluster: it runs to its end and its figures are there and true.

A benchmark asserts nothing about speed; this checks the harness itself (its own private
control plane, the brain as a process, the audit log, the watches): every documented key is in
the last line's JSON, every flagged node was rebooted and the limit held.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

BENCH = Path(__file__).resolve().parents[2] / "bench" / "scale.py"
KEYS = (
    "nodes",
    "brain_start_to_first_status_s",
    "brain_idle_cpu_pct",
    "brain_churn_cpu_pct",
    "brain_idle_rss_mib",
    "brain_peak_rss_mib",
    "idle_requests_per_s",
    "flag_to_first_cordon_s",
    "rollout_s",
    "rebooted",
    "max_in_maintenance",
    "limit",
    "requests_per_reboot_excluding_evictions",
    "window_object_bytes",
    "lock_object_bytes",
    "plan_cli_s",
    "status_done_count",
    "handoff_p50_s",
    "time_to_limit_s",
)


def test_the_scale_bench_runs_a_small_rollout_to_its_end() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--nodes", "20", "--flag", "3", "--max-unavailable", "2"),
            *("--idle-seconds", "3", "--churn-seconds", "3", "--settle-seconds", "1"),
            *("--phase-timeout", "120", "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in result, result["error"]
    assert [key for key in KEYS if key not in result] == []
    assert result["nodes"] == 20
    assert result["rebooted"] == 3
    assert result["limit"] == 2
    assert 1 <= result["max_in_maintenance"] <= 2
    assert result["max_cordoned"] <= 2
    assert result["status_done_count"] == 3
    # The brain's own requests were counted from the audit log: every reboot costs some.
    assert result["requests_per_reboot_excluding_evictions"] > 5
    assert result["brain_peak_rss_mib"] > 10
    assert result["window_object_bytes"] > 0 and result["lock_object_bytes"] > 0
