"""A local OCI registry for tests: distribution's `registry` on 127.0.0.1, plain HTTP.

The release test pushes both images and the chart to it, and Helm and containerd pull from it,
as they would from a real registry. Its storage is a temporary folder that goes with it.
`python -m localcluster.registry` runs one in the foreground (Ctrl-C stops it).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from localcluster.binaries import ensure_registry
from localcluster.processes import Component, free_port


@dataclass
class LocalRegistry:
    """A running registry; `address` (127.0.0.1:PORT) is what `REGISTRY=` and image names use."""

    component: Component
    port: int
    folder: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def repositories(self) -> list[str]:
        """The catalogue: every repository pushed so far (images and charts)."""
        with urllib.request.urlopen(f"http://{self.address}/v2/_catalog", timeout=10) as answer:
            return list(json.load(answer).get("repositories") or [])

    def tags(self, repository: str) -> list[str]:
        url = f"http://{self.address}/v2/{repository}/tags/list"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return list(json.load(answer).get("tags") or [])

    def stop(self) -> None:
        self.component.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _serving(address: str) -> bool:
    with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
        return bool(answer.status == 200)


def start_registry() -> LocalRegistry:
    """Build the binary if needed (once, cached), start it on a free port, wait until it serves."""
    binary = ensure_registry()
    folder = Path(tempfile.mkdtemp(prefix="pitstop-registry-"))
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "storage")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    (folder / "config.yml").write_text(json.dumps(config))  # YAML is a superset of JSON
    # No tracing exporter: distribution v3 would otherwise try to reach an OTLP collector.
    environment = {"PATH": "/usr/bin:/bin", "OTEL_TRACES_EXPORTER": "none"}
    component = Component(
        "registry",
        [str(binary), "serve", str(folder / "config.yml")],
        folder / "registry.log",
        env=environment,
    )
    component.start()
    registry = LocalRegistry(component, port, folder)
    try:
        component.wait_until(lambda: _serving(registry.address), "serving", timeout=30)
    except BaseException:
        registry.stop()
        raise
    return registry


@contextmanager
def local_registry() -> Iterator[LocalRegistry]:
    registry = start_registry()
    try:
        yield registry
    finally:
        registry.stop()


def main() -> int:
    with local_registry() as registry:
        print(f"registry at {registry.address} (log: {registry.component.log_path})", flush=True)
        try:
            while registry.component.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
