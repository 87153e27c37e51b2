"""`pitstop-brain`: answers `--version` before importing the operator (kopf, the kubernetes
client), so checking an image's version is instant and needs no cluster; else runs the brain."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pitstop.version import version_line


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words == ["--version"]:
        print(version_line("pitstop-brain"))
        return 0
    from brain.main import main as run_brain

    return run_brain(words)
