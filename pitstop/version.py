"""Pitstop's one version (pyproject's `version`), for `--version`, metrics and image tags.

Installed (the images, `uv sync`), it comes from the package metadata; run from a checkout
without an install (PYTHONPATH=.), it is read from pyproject.toml next to the package.
Standard library only: the detector imports it.
"""

from __future__ import annotations

import platform
import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "pitstop"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
UNKNOWN = "0+unknown"


def _from_pyproject() -> str | None:
    """The `version` of the [project] table, without a TOML parser's cost at start-up."""
    try:
        text = PYPROJECT.read_text()
    except OSError:
        return None
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
    if project is None:
        return None
    found = re.search(r'^version\s*=\s*"([^"]+)"', project.group(1), re.MULTILINE)
    return found.group(1) if found else None


def version() -> str:
    """The installed package's version; from a checkout that is not installed, pyproject's."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _from_pyproject() or UNKNOWN


def python_version() -> str:
    return platform.python_version()


def version_line(program: str) -> str:
    """What `PROGRAM --version` prints, e.g. `pitstop-brain 0.1.0`."""
    return f"{program} {version()}"
