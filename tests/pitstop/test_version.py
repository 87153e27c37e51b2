"""One version everywhere: pyproject's, in every command's --version and in the chart."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from pitstop import version as version_module

REPOSITORY = Path(__file__).resolve().parents[2]
SCRIPTS = Path(sys.executable).parent


def pyproject_version() -> str:
    return str(tomllib.loads((REPOSITORY / "pyproject.toml").read_text())["project"]["version"])


def test_version_is_pyprojects() -> None:
    assert version_module.version() == pyproject_version()


def test_checkout_without_install_reads_pyproject(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", not_installed)
    assert version_module.version() == pyproject_version()
    monkeypatch.setattr(version_module, "PYPROJECT", REPOSITORY / "no-such-file.toml")
    assert version_module.version() == version_module.UNKNOWN


def test_chart_version_and_app_version_are_pyprojects() -> None:
    chart = yaml.safe_load((REPOSITORY / "charts" / "pitstop" / "Chart.yaml").read_text())
    assert chart["version"] == pyproject_version()
    assert chart["appVersion"] == pyproject_version()


@pytest.mark.parametrize("program", ["pitstop-brain", "pitstop-detector", "pitstop"])
def test_every_command_prints_the_version(program: str) -> None:
    # No KUBECONFIG and no cluster: --version must not need either.
    result = subprocess.run(
        [str(SCRIPTS / program), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/nonexistent"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{program} {pyproject_version()}\n"


def test_brain_version_does_not_import_the_operator() -> None:
    probe = (
        "import sys; from brain.launcher import main; code = main(['--version']); "
        "print(sorted(m for m in ('kopf', 'kubernetes') if m in sys.modules)); sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
