"""`python -m localcluster`: build the binaries, or run a local cluster until Ctrl-C/SIGTERM.

python -m localcluster build                     # build or find the binaries, print them
python -m localcluster up [--dir D] [--nodes N] [--zones Z]
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from localcluster import binaries


def _up(arguments: argparse.Namespace) -> int:
    from kubernetes import client, config

    from localcluster.controlplane import ControlPlane
    from localcluster.nodes import create_nodes

    stop = threading.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: stop.set())
    folder = Path(arguments.dir).resolve() if arguments.dir else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    plane = ControlPlane(workdir=folder, name="pitstop-dev")
    try:
        plane.start()
        configuration = client.Configuration()
        config.load_kube_config(str(plane.kubeconfig), client_configuration=configuration)
        api = client.ApiClient(configuration)
        zones = [f"zone-{chr(ord('a') + index)}" for index in range(max(arguments.zones, 1))]
        for index in range(arguments.nodes):
            create_nodes(api, [f"node-{index + 1:02d}"], zone=zones[index % len(zones)])
        kubectl = plane.binaries["kubectl"]
        print(
            f"\nLocal cluster is up ({arguments.nodes} kwok nodes).\n"
            f"  export KUBECONFIG={plane.kubeconfig}\n"
            f"  {kubectl} get nodes -L topology.kubernetes.io/zone\n"
            f"Component logs: {plane.logs}\n"
            "Press Ctrl-C to stop it.\n",
            flush=True,
        )
        if folder is not None:
            (folder / "ready").write_text(str(plane.kubeconfig) + "\n")
        while not stop.wait(1):
            for component in plane.components.values():
                if not component.running:
                    print(component.failure("stopped unexpectedly"), file=sys.stderr)
                    return 1
        return 0
    finally:
        print("Stopping the local cluster...", flush=True)
        plane.stop()
        if folder is not None:
            (folder / "ready").unlink(missing_ok=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="find or build the control-plane binaries")
    up = commands.add_parser("up", help="run a local control plane until interrupted")
    up.add_argument("--dir", help="keep the cluster's files here (default: a temp folder)")
    up.add_argument("--nodes", type=int, default=3, help="kwok nodes to create")
    up.add_argument("--zones", type=int, default=2, help="zones to spread them over")
    arguments = parser.parse_args()
    if arguments.command == "build":
        return binaries.main()
    return _up(arguments)


if __name__ == "__main__":
    raise SystemExit(main())
