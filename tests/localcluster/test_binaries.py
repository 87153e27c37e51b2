"""The binary cache: pure parts (no build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from localcluster import binaries, versions


def test_cache_key_names_every_pinned_version() -> None:
    key = versions.cache_key()
    assert versions.KUBERNETES_VERSION in key
    assert versions.ETCD_VERSION in key
    assert versions.KWOK_VERSION in key


def test_cache_lives_outside_the_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PITSTOP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert binaries.binary_cache_dir().is_relative_to(tmp_path / "pitstop" / "bin")


def test_staging_replaces_follow_the_kubernetes_go_mod(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text(
        "module k8s.io/kubernetes\n\nreplace (\n"
        "\tk8s.io/api => ./staging/src/k8s.io/api\n"
        "\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n)\n"
    )
    lines = binaries._staging_replaces(tmp_path)
    staging = versions.KUBERNETES_STAGING_VERSION
    assert lines == [
        f"\tk8s.io/api => k8s.io/api {staging}",
        f"\tk8s.io/client-go => k8s.io/client-go {staging}",
    ]


def test_a_failed_build_step_names_the_command_and_log(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(binaries.BuildError) as failure:
        binaries._run("demo step", ["sh", "-c", "echo broken >&2; exit 3"], tmp_path, log, {})
    message = str(failure.value)
    assert "demo step" in message and "exited 3" in message and "broken" in message


def test_registry_has_its_own_cache_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pinning the OCI registry never invalidates the control-plane binaries (a long build)."""
    control_plane = versions.cache_key()
    registry = versions.registry_cache_key()
    monkeypatch.setattr(versions, "REGISTRY_VERSION", "v9.9.9")
    assert versions.cache_key() == control_plane
    assert versions.registry_cache_key() != registry
    assert versions.REGISTRY_VERSION in versions.registry_cache_key()
