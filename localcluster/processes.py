"""Start and stop local processes so that none outlives the run that started it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_step(
    arguments: Sequence[str],
    what: str,
    timeout: float,
    error: Callable[[str], Exception],
    name_command: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run one setup step to its end; on failure raise `error` naming `what` (and the command
    where asked) with the output's last 2000 characters, so the reader sees why it failed."""
    try:
        result = subprocess.run(
            list(arguments), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as failure:
        raise error(f"{what}: {failure}") from failure
    if result.returncode != 0:
        command = f" ({' '.join(arguments)})" if name_command else ""
        output = (result.stdout + result.stderr).strip()
        raise error(f"{what} failed{command}: {output[-2000:]}")
    return result


class ComponentError(RuntimeError):
    """A component failed to start; the message names it, its command and its log's last lines."""


class Component:
    """One long-running process with its own log file."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = [str(part) for part in command]
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n$ {' '.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self, what: str) -> ComponentError:
        code = None if self.process is None else self.process.poll()
        state = "is running" if code is None else f"exited with {code}"
        return ComponentError(
            f"{self.name} {what} ({state}); command: {' '.join(self.command)}\n"
            f"log {self.log_path}, last lines:\n{log_tail(self.log_path)}"
        )

    def wait_until(self, check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        """Poll `check` until it is true; fail with the log's tail if the process dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise self.failure(f"died before it was {what}")
            with contextlib.suppress(Exception):
                if check():
                    return
            time.sleep(0.1)
        raise self.failure(f"was not {what} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        if self.process is None:
            return
        process, self.process = self.process, None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)

    def kill(self) -> None:
        """SIGKILL at once: a crash, for tests that prove recovery."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None
