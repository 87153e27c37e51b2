"""`make demo` as a person runs it: in a terminal, with the project's .venv activated, and
stopped with Ctrl-C once `--keep` holds the cluster: it stops everything and exits 0, without
make's "Error 130"."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.test_demo import processes_using, wait_until_gone, work_folder

pytestmark = pytest.mark.cluster

REPOSITORY = Path(__file__).resolve().parents[2]
VENV = REPOSITORY / ".venv"
SMALL = "--nodes 3 --zones 1 --budget 1 --per-zone 1 --flagged 1 --keep"


def activated_environment() -> dict[str, str]:
    """What `source .venv/bin/activate` does to the environment."""
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONHOME"}
    environment["VIRTUAL_ENV"] = str(VENV)
    environment["PATH"] = f"{VENV / 'bin'}:{os.environ['PATH']}"
    return environment


def test_make_setup_with_the_venv_activated() -> None:
    result = subprocess.run(
        ["make", "-s", "setup"],
        cwd=REPOSITORY,
        env=activated_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No module named" not in result.stderr


def read_until(fd: int, text: str, output: list[str], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096).decode(errors="replace")
        except OSError:  # the terminal closed: every process on it ended
            return text in "".join(output)
        if not chunk:
            return text in "".join(output)
        output.append(chunk)
        if text in "".join(output):
            return True
    return False


def test_ctrl_c_ends_make_demo_keep_quietly() -> None:
    pid, terminal = pty.fork()
    if pid == 0:  # the child: make in a terminal of its own, the venv activated
        os.chdir(REPOSITORY)
        os.execvpe("make", ["make", "demo", f"DEMO_ARGS={SMALL}"], activated_environment())
    output: list[str] = []
    status: int | None = None
    try:
        assert read_until(terminal, "Ctrl-C stops it", output, 600), "".join(output)
        os.write(terminal, b"\x03")  # Ctrl-C, typed into the terminal
        read_until(terminal, "\x00never", output, 120)  # to the end of the output
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    text = "".join(output)
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "Error" not in text and "Interrupt" not in text and "Traceback" not in text, text
    assert "No module named" not in text
    assert "Stopped (" in text
    folder = work_folder(text)
    assert wait_until_gone(folder) == [], text
    assert processes_using(folder) == []
