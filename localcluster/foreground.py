"""Run a command as the terminal's foreground job, so that Ctrl-C reaches it and not `make`.

A terminal sends Ctrl-C's SIGINT to its whole foreground process group: `make` too, which then
dies of it whatever its recipe does (`make: *** [Makefile: demo] Error 130`). Run through this
module, the command gets a process group of its own that the terminal sends Ctrl-C to; it ends
the way it means to (the demo stops everything, and exits 0 when Ctrl-C ends `--keep`), and
make only sees its exit code. Without a terminal the command simply runs.

Usage: python -m localcluster.foreground COMMAND [ARGS...]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def _may_take_the_terminal() -> Iterator[None]:
    """tcsetpgrp from a background group raises SIGTTOU (which stops us) unless it is ignored."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _terminal() -> int | None:
    if not os.isatty(sys.stdin.fileno()):
        return None
    try:
        return os.open("/dev/tty", os.O_RDWR)
    except OSError:
        return None


def run_in_foreground(command: Sequence[str]) -> int:
    terminal = _terminal()
    if terminal is None:
        return subprocess.call(list(command))
    original_group = os.tcgetpgrp(terminal)
    child = subprocess.Popen(list(command), process_group=0)
    try:
        with _may_take_the_terminal(), contextlib.suppress(OSError):  # it may be gone already
            os.tcsetpgrp(terminal, child.pid)
        # Ctrl-C now goes to the child's group only; should one still reach us, the child
        # decides how to end.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        code = child.wait()
    finally:
        with _may_take_the_terminal(), contextlib.suppress(OSError):
            os.tcsetpgrp(terminal, original_group)
        os.close(terminal)
    return code if code >= 0 else 128 - code


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m localcluster.foreground COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_in_foreground(command)


if __name__ == "__main__":
    raise SystemExit(main())
