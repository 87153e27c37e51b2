"""Prints the detector's memory and CPU while idle and while reporting, and its reaction time.

Runs the real detector (`python -m detector`) in in-cluster mode (token file and CA file, as in
a pod) against a private local control plane with one kwok node. A benchmark, not a test: it
prints figures and asserts nothing.

    uv run python bench/detector_footprint.py [--idle-seconds 20] [--toggles 20]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from localcluster.controlplane import ControlPlane  # noqa: E402
from localcluster.nodes import create_nodes  # noqa: E402
from localcluster.processes import free_port  # noqa: E402
from pitstop import contract  # noqa: E402
from tests.conftest import api_client_for  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """(current VmRSS, peak VmHWM) in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--toggles", type=int, default=20)
    arguments = parser.parse_args()

    with ControlPlane(name="pitstop-bench") as plane, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        api = api_client_for(plane)
        core = client.CoreV1Api(api)
        node = f"bench-{uuid.uuid4().hex[:6]}"
        create_nodes(api, [node])
        config = json.loads(plane.kubeconfig.read_text())
        account = work / "serviceaccount"
        account.mkdir()
        (account / "ca.crt").write_bytes(
            base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        )
        (account / "token").write_text(config["users"][0]["user"]["token"])
        host, port = plane.server.removeprefix("https://").rsplit(":", 1)
        sentinel_dir = work / "host-run"
        sentinel_dir.mkdir()
        sentinel = sentinel_dir / "reboot-required"
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("KUBE")
        }
        environment.update(
            NODE_NAME=node,
            KUBERNETES_SERVICE_HOST=host,
            KUBERNETES_SERVICE_PORT=port,
            PITSTOP_SERVICE_ACCOUNT_DIR=str(account),
            PITSTOP_SENTINEL_PATH=str(sentinel),
            PITSTOP_METRICS_PORT=str(free_port()),
            PITSTOP_METRICS_ADDRESS="127.0.0.1",
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "detector"],
            env=environment,
            cwd=REPOSITORY,
            stderr=(work / "detector.log").open("wb"),
        )
        try:
            time.sleep(3)  # start-up, first watch event
            cpu_before = cpu_seconds(process.pid)
            time.sleep(arguments.idle_seconds)
            idle_cpu = cpu_seconds(process.pid) - cpu_before
            idle_rss, _ = rss_kib(process.pid)

            reactions: list[float] = []
            cpu_before = cpu_seconds(process.pid)
            started = time.monotonic()
            for index in range(arguments.toggles):
                present = index % 2 == 0
                changed = time.monotonic()
                if present:
                    sentinel.write_text(f"reason {index}\n")
                else:
                    sentinel.unlink()
                while True:
                    labels = core.read_node(node).metadata.labels or {}
                    if (contract.REBOOT_REQUIRED_LABEL in labels) == present:
                        break
                    if time.monotonic() - changed > 10:
                        raise SystemExit(f"no report within 10 s (toggle {index})")
                    time.sleep(0.01)
                reactions.append(time.monotonic() - changed)
            busy_seconds = time.monotonic() - started
            busy_cpu = cpu_seconds(process.pid) - cpu_before
            busy_rss, peak_rss = rss_kib(process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=5)
            api.close()

    print(f"python {sys.version.split()[0]}, detector in in-cluster mode (token + CA files)")
    print(
        f"idle:      RSS {idle_rss / 1024:.1f} MiB, "
        f"CPU {idle_cpu:.2f} s over {arguments.idle_seconds:.0f} s "
        f"({100 * idle_cpu / arguments.idle_seconds:.2f} %)"
    )
    print(
        f"reporting: RSS {busy_rss / 1024:.1f} MiB (peak {peak_rss / 1024:.1f} MiB), "
        f"CPU {busy_cpu:.2f} s over {busy_seconds:.1f} s for {arguments.toggles} changes"
    )
    print(
        f"reaction (file change -> Node updated, seen by a reader polling every 10 ms): "
        f"median {statistics.median(reactions) * 1000:.0f} ms, "
        f"max {max(reactions) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
