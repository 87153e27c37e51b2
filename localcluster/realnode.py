"""One REAL node for the local control plane: a kubelet and containerd that run real pods.

kwok nodes prove the control logic; this node proves that Pitstop's pods really run: the
detector with its own projected token, the brain with in-cluster config, the reboot Job. Used by
the end-to-end test (tests/e2e/); `python -m localcluster.realnode --check` says whether this
machine can host one.

How it stays off the host (this is the machine the tests run on):
- containerd and the kubelet run in a private mount namespace (held by a `sleep` process) with
  tmpfs over /run, /var/lib and /var/log, so the fixed paths they write (kubelet.sock, the shim
  sockets, /var/lib/cni, /var/log/containers) never reach the host, and
  /proc/sys/kernel/random/boot_id is bind-mounted from a file this module controls: a simulated
  reboot writes a new boot ID there and the kubelet reports it, exactly as after a real reboot.
- Every other path (containerd's root and state, the kubelet's root, pod logs, CNI config and
  IPAM state) is under one work folder.
- What cannot be private is recorded and restored: the sysctls the kubelet rewrites, the bridge,
  one nft table of our own (pods reach the API at 10.96.0.1:443 through a DNAT to the API
  server's loopback port; there is no kube-proxy), and the cgroup folders containerd creates.
- One real node per machine at a time (bridge and nft names are fixed): a flock guards it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from localcluster import image
from localcluster.binaries import cache_root, resolve
from localcluster.certs import issue_client_certificate
from localcluster.controlplane import ControlPlane
from localcluster.processes import Component, free_port, run_step

BRIDGE = "pitstop0"
SUBNET = "10.244.77.0/24"
GATEWAY = "10.244.77.1"
NFT_TABLE = "pitstop_real_node"
API_SERVICE_IP = "10.96.0.1"
PAUSE_IMAGE = "localhost/pitstop-pause:1"
LOCK_PATH = Path("/run/lock/pitstop-real-node.lock")
# What teardown must undo, written while a node runs: a run that was killed before its teardown
# leaves it, and the next run undoes that run's changes first (sysctls, bridge, nft, cgroups).
STATE_PATH = Path("/run/lock/pitstop-real-node.state.json")
CNI_PLUGIN_DIRECTORIES = (Path("/usr/lib/cni"), Path("/opt/cni/bin"))
CNI_PLUGINS = ("bridge", "host-local", "loopback")
HOST_PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "nft": "nftables",
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "gcc": "gcc",
}
# The kubelet sets these when protectKernelDefaults is false (its default); we restore them.
# ip_forward is set by the CNI bridge plugin (isGateway).
SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
)
# Host folders hidden behind a tmpfs inside the node's mount namespace.
PRIVATE_FOLDERS = ("/run", "/var/lib", "/var/log")
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
CGROUP_ROOT = Path("/sys/fs/cgroup")

PAUSE_SOURCE = r"""
/* The pod sandbox's process: sleep until told to stop, reap children. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void stop(int signal_number) { (void)signal_number; _exit(0); }
static void reap(int signal_number) {
  (void)signal_number;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}
int main(void) {
  struct sigaction on_stop = {.sa_handler = stop};
  struct sigaction on_child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &on_stop, NULL);
  sigaction(SIGTERM, &on_stop, NULL);
  sigaction(SIGCHLD, &on_child, NULL);
  for (;;) pause();
}
"""


class RealNodeUnavailableError(RuntimeError):
    """This machine cannot host a real node; the message says exactly why."""


class RealNodeError(RuntimeError):
    """A step of the real node's setup failed; the message names the step and its output."""


def _log(message: str) -> None:
    print(f"[localcluster.realnode] {message}", file=sys.stderr, flush=True)


def _run(arguments: Sequence[str], what: str, timeout: float = 300) -> str:
    return run_step(arguments, what, timeout, RealNodeError, name_command=True).stdout


def cni_plugin_directory() -> Path | None:
    for directory in CNI_PLUGIN_DIRECTORIES:
        if all((directory / plugin).is_file() for plugin in CNI_PLUGINS):
            return directory
    return None


def unavailable_reason() -> str | None:
    """Why this machine cannot host a real node, or None when it can (after ensure_host_tools)."""
    if os.geteuid() != 0:
        return "not root: a kubelet and containerd need root (namespaces, mounts, cgroups)"
    if not Path("/proc/self/ns/mnt").exists():
        return "no mount namespaces (/proc/self/ns/mnt missing)"
    missing = sorted({package for command, package in HOST_PACKAGES.items() if not _which(command)})
    if missing:
        return f"missing host packages: {', '.join(missing)} (no apt-get to install them)"
    if cni_plugin_directory() is None:
        return (
            f"CNI plugins {', '.join(CNI_PLUGINS)} not found in "
            f"{' or '.join(map(str, CNI_PLUGIN_DIRECTORIES))} (package containernetworking-plugins)"
        )
    if not CGROUP_ROOT.is_dir():
        return f"no cgroup file system at {CGROUP_ROOT}"
    return None


def _which(command: str) -> str | None:
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


def ensure_host_tools() -> None:
    """apt-get install what a real node needs, where missing (the test machines run as root)."""
    missing = sorted({package for command, package in HOST_PACKAGES.items() if not _which(command)})
    if cni_plugin_directory() is None:
        missing.append("containernetworking-plugins")
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    _log(f"installing {' '.join(missing)} with apt-get")
    _run(["apt-get", "update", "-qq"], "apt-get update", timeout=600)
    _run(
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", *missing],
        f"apt-get install {' '.join(missing)}",
        timeout=1200,
    )


# -- images ----------------------------------------------------------------------------------------


def _image_folder() -> Path:
    folder = cache_root() / "image"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pause_image_archive() -> Path:
    """A tiny static pause image (FROM scratch), built once and saved as a tar for containerd."""
    archive = _image_folder() / "pitstop-pause-1.tar"
    if archive.exists():
        return archive
    image.ensure_host_tools()  # podman, on a machine that has nothing yet
    with tempfile.TemporaryDirectory(prefix="pitstop-pause-", dir=_image_folder()) as folder:
        context = Path(folder)
        (context / "pause.c").write_text(PAUSE_SOURCE)
        _run(
            ["gcc", "-static", "-Os", "-o", str(context / "pause"), str(context / "pause.c")],
            "compiling the static pause binary",
        )
        (context / "Containerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n'
        )
        _run(
            image.podman("build", "-t", PAUSE_IMAGE, "-f", str(context / "Containerfile"), folder),
            "podman build of the pause image",
        )
        partial = context / "pause.tar"
        _run(image.podman("save", "-o", str(partial), PAUSE_IMAGE), "podman save (pause)")
        partial.rename(archive)
    return archive


def project_image_archives() -> dict[str, tuple[str, Path]]:
    """Both project images (localcluster.image) saved as tars, once per content hash:
    target -> (reference, archive)."""
    archives = {}
    for target, built in image.build_images().items():
        name = built.reference.rsplit(":", 1)[1]
        archive = _image_folder() / f"{target}-{name}.tar"
        if not archive.exists():
            for stale in _image_folder().glob(f"{target}-[0-9a-f]*.tar"):
                stale.unlink()
            partial = archive.with_suffix(".partial")
            partial.unlink(missing_ok=True)
            _run(image.podman("save", "-o", str(partial), built.reference), "podman save")
            partial.rename(archive)
        archives[target] = (built.reference, archive)
    return archives


# -- host state ------------------------------------------------------------------------------------


def _read_sysctls() -> dict[str, str]:
    values = {}
    for name in SYSCTLS:
        path = Path("/proc/sys") / name
        if path.exists():
            values[name] = path.read_text().strip()
    return values


def _cgroup_folders() -> set[Path]:
    """Every folder one level under each cgroup controller (what containerd adds shows here)."""
    folders: set[Path] = set()
    if not CGROUP_ROOT.is_dir():
        return folders
    for controller in CGROUP_ROOT.iterdir():
        if controller.is_dir():
            folders.update(child for child in controller.iterdir() if child.is_dir())
    return folders


@dataclass(frozen=True)
class HostSnapshot:
    """What the real node may change on the host; taken before and compared after."""

    sysctls: dict[str, str]
    links: frozenset[str]
    nft_tables: frozenset[str]
    mount_count: int
    cgroup_folders: frozenset[Path]
    fixed_paths: frozenset[str]
    processes: frozenset[str]

    @classmethod
    def take(cls) -> HostSnapshot:
        links = _run(["ip", "-o", "link", "show"], "ip link").splitlines()
        tables = _run(["nft", "list", "tables"], "nft list tables").splitlines()
        watched_paths = (
            "/var/lib/kubelet",
            "/var/log/containers",
            "/var/log/pods",
            "/var/lib/cni",
            "/run/containerd",
            "/var/lib/containerd",
        )
        return cls(
            sysctls=_read_sysctls(),
            links=frozenset(line.split(":")[1].strip().split("@")[0] for line in links),
            nft_tables=frozenset(line.strip() for line in tables if line.strip()),
            mount_count=len(Path("/proc/self/mounts").read_text().splitlines()),
            cgroup_folders=frozenset(_cgroup_folders()),
            fixed_paths=frozenset(path for path in watched_paths if os.path.lexists(path)),
            processes=frozenset(_node_processes()),
        )

    def differences(self, later: HostSnapshot) -> list[str]:
        """What `later` has that this snapshot did not (empty: the machine is as it was)."""
        found = []
        for name, value in self.sysctls.items():
            if later.sysctls.get(name) != value:
                found.append(f"sysctl {name}: {value} -> {later.sysctls.get(name)}")
        for what, before, after in (
            ("link", self.links, later.links),
            ("nft table", self.nft_tables, later.nft_tables),
            ("cgroup folder", self.cgroup_folders, later.cgroup_folders),
            ("path", self.fixed_paths, later.fixed_paths),
            ("process", self.processes, later.processes),
        ):
            found.extend(f"{what} left behind: {item}" for item in sorted(map(str, after - before)))
        if later.mount_count != self.mount_count:
            found.append(f"mounts: {self.mount_count} -> {later.mount_count}")
        return found


def _node_processes() -> list[str]:
    """Running containerd, shim and kubelet processes (`pid name`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            name = (entry / "comm").read_text().strip()
            if name in ("containerd", "kubelet") or name.startswith("containerd-shim"):
                found.append(f"{entry.name} {name}")
    return found


def _command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _processes_in_mount_namespace(namespace: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "mnt") == namespace:
                    pids.append(int(entry.name))
    return pids


@dataclass(frozen=True)
class ContainerProcess:
    """A container's main process on the real node, seen from the host (what really runs)."""

    pid: int

    def _status(self, key: str) -> str:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return line.split(":", 1)[1].strip()
        raise KeyError(key)

    @property
    def user_ids(self) -> tuple[int, int]:
        """(real, effective) user id."""
        real, effective, *_ = self._status("Uid").split()
        return int(real), int(effective)

    @property
    def effective_capabilities(self) -> int:
        return int(self._status("CapEff"), 16)

    @property
    def no_new_privileges(self) -> bool:
        return self._status("NoNewPrivs") == "1"

    @property
    def root_read_only(self) -> bool:
        for line in Path(f"/proc/{self.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[4] == "/":
                return "ro" in fields[5].split(",")
        return False

    @property
    def shares_host_pid_namespace(self) -> bool:
        return os.readlink(f"/proc/{self.pid}/ns/pid") == os.readlink("/proc/self/ns/pid")

    def read_file(self, path: str) -> str:
        """A file as the container sees it (e.g. its service-account token).

        Symbolic links are followed inside the container's root (through /proc/PID/root an
        absolute link, such as Debian's /var/run -> /run, would point into the host's).
        """
        root = Path(f"/proc/{self.pid}/root")
        current = PurePosixPath("/")
        parts = list(PurePosixPath("/", path).parts[1:])
        for _ in range(64):
            if not parts:
                return (root / str(current).lstrip("/")).read_text()
            candidate = current / parts.pop(0)
            on_host = root / str(candidate).lstrip("/")
            if on_host.is_symlink():
                target = PurePosixPath(os.readlink(on_host))
                base = PurePosixPath("/") if target.is_absolute() else current
                parts = list((base / target).parts[1:]) + parts
                current = PurePosixPath("/")
            else:
                current = candidate
        raise RealNodeError(f"too many symbolic links in {path}")


# -- the node --------------------------------------------------------------------------------------


@dataclass
class RealNode:
    """A kubelet + containerd registered with `cluster` as node `name`. Use as a context manager."""

    cluster: ControlPlane
    name: str = "pitstop-real-node"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pitstop-node-")))
    # The brain's and the detector's images, imported from tars (built here) when no registry
    # is given; with `registry` (host:port, plain HTTP) containerd pulls them from there.
    project_image: str = ""
    detector_image: str = ""
    registry: str = ""
    boot_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    components: dict[str, Component] = field(default_factory=dict)
    _lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _snapshot: HostSnapshot | None = None
    _namespace: str = ""
    _cleanups: list[tuple[str, Any]] = field(default_factory=list)

    def __enter__(self) -> RealNode:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    @property
    def boot_id_file(self) -> Path:
        return self.workdir / "boot_id"

    def log_paths(self) -> dict[str, Path]:
        return {name: component.log_path for name, component in self.components.items()}

    # -- setup -------------------------------------------------------------------------------------

    def start(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise RealNodeUnavailableError(reason)
        self._lock.enter_context(real_node_lock())
        try:
            if STATE_PATH.exists():
                recover_stale_node()
            self._snapshot = HostSnapshot.take()
            self._write_state()
            started = time.monotonic()
            self._start()
            _log(f"node {self.name} Ready in {time.monotonic() - started:.1f} s ({self.workdir})")
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        pause_archive = pause_image_archive()
        project_archives: list[Path] = []
        if not self.registry and not self.project_image:
            built = project_image_archives()
            self.project_image, brain_archive = built["brain"]
            self.detector_image, detector_archive = built["detector"]
            project_archives = [brain_archive, detector_archive]
        for folder in ("containerd", "kubelet", "pod-logs", "cni/net.d", "cni/ipam", "pki"):
            (self.workdir / folder).mkdir(parents=True, exist_ok=True)
        self.boot_id_file.write_text(self.boot_id + "\n")
        self._create_bridge()
        self._create_nft_table()
        self._start_namespace()
        self._write_cni_config()
        self._start_containerd()
        self._import_image(pause_archive)
        for archive in project_archives:
            self._import_image(archive)
        self._write_kubelet_files()
        self.start_kubelet()
        self.wait_ready()

    def _create_bridge(self) -> None:
        self._cleanups.append(("bridge", None))
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"], "creating the bridge")
        _run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], "addressing the bridge")
        _run(["ip", "link", "set", BRIDGE, "up"], "bringing the bridge up")
        # Lets the DNAT to the API server's loopback port apply to packets from the pods.
        Path(f"/proc/sys/net/ipv4/conf/{BRIDGE}/route_localnet").write_text("1\n")

    def _create_nft_table(self) -> None:
        self._cleanups.append(("nft", None))
        port = self.cluster.apiserver_port
        rules = f"""
table ip {NFT_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{BRIDGE}" ip daddr {API_SERVICE_IP} tcp dport 443 dnat to 127.0.0.1:{port}
  }}
  chain output {{
    type nat hook output priority -100; policy accept;
    ip daddr {API_SERVICE_IP} tcp dport 443 dnat to 127.0.0.1:{port}
  }}
}}
"""
        rules_file = self.workdir / "nft.rules"
        rules_file.write_text(rules)
        _run(["nft", "-f", str(rules_file)], "creating the nft table")

    def _start_namespace(self) -> None:
        """The private mount namespace: tmpfs over the fixed host folders, our boot_id."""
        ready = self.workdir / "namespace-ready"
        mounts = " && ".join(
            [f"mount -t tmpfs -o mode=0755 pitstop-{Path(f).name} {f}" for f in PRIVATE_FOLDERS]
            + [f"mount --bind {self.boot_id_file} {BOOT_ID_PATH}", f"touch {ready}"]
        )
        holder = self._component(
            "namespace",
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                f"set -e; {mounts}; exec sleep infinity",
            ],
        )
        holder.wait_until(ready.exists, "set up", timeout=10)
        assert holder.process is not None
        self._namespace = os.readlink(f"/proc/{holder.process.pid}/ns/mnt")
        self._write_state()

    def _write_state(self) -> None:
        assert self._snapshot is not None
        state = {
            "sysctls": self._snapshot.sysctls,
            "cgroupFolders": sorted(map(str, self._snapshot.cgroup_folders)),
            "namespace": self._namespace,
            "workdir": str(self.workdir),
        }
        STATE_PATH.write_text(json.dumps(state, indent=2) + "\n")

    def _in_namespace(self, command: Sequence[str]) -> list[str]:
        process = self.components["namespace"].process
        assert process is not None
        return ["nsenter", "--target", str(process.pid), "--mount", "--", *command]

    def _component(self, name: str, command: Sequence[str]) -> Component:
        component = Component(name, command, self.logs / f"{name}.log")
        self.components[name] = component
        component.start()
        return component

    def _write_cni_config(self) -> None:
        config = {
            "cniVersion": "0.4.0",
            "name": "pitstop",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                        "dataDir": str(self.workdir / "cni" / "ipam"),
                    },
                }
            ],
        }
        target = self.workdir / "cni" / "net.d" / "10-pitstop.conflist"
        target.write_text(json.dumps(config, indent=2))

    def _start_containerd(self) -> None:
        root = self.workdir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config = f"""
version = 2
root = "{root / "root"}"
state = "{root / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This machine refuses to lower oom_score_adj (the sandbox asks for -998): keep it at ours.
  restrict_oom_score_adj = true
[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{_which("runc")}"
  SystemdCgroup = false
[{cri}.cni]
  bin_dir = "{cni_plugin_directory()}"
  conf_dir = "{self.workdir / "cni" / "net.d"}"
[{cri}.registry]
  config_path = "{root / "certs.d"}"
"""
        config_file = root / "config.toml"
        config_file.write_text(config)
        if self.registry:
            # A plain-HTTP registry (the local test one): containerd's hosts.toml for it.
            hosts = root / "certs.d" / self.registry / "hosts.toml"
            hosts.parent.mkdir(parents=True, exist_ok=True)
            hosts.write_text(
                f'server = "http://{self.registry}"\n\n'
                f'[host."http://{self.registry}"]\n'
                '  capabilities = ["pull", "resolve"]\n'
            )
        containerd = self._component(
            "containerd",
            self._in_namespace([str(_which("containerd")), "--config", str(config_file)]),
        )
        containerd.wait_until(
            lambda: subprocess.run(self._ctr("version"), capture_output=True).returncode == 0,
            "serving",
            timeout=30,
        )

    def _ctr(self, *arguments: str) -> list[str]:
        return [
            str(_which("ctr")),
            "--address",
            str(self.socket),
            "--namespace",
            "k8s.io",
            *arguments,
        ]

    def images(self) -> set[str]:
        """The image references containerd holds (Kubernetes' namespace)."""
        return set(_run(self._ctr("images", "ls", "-q"), "ctr images ls").split())

    def _import_image(self, archive: Path) -> None:
        _run(self._ctr("images", "import", str(archive)), f"importing {archive.name}", timeout=600)

    def _write_kubelet_files(self) -> None:
        certificates = self.cluster.certificates
        assert certificates is not None
        pki = self.workdir / "pki"
        cert, key = issue_client_certificate(
            certificates, pki, "kubelet", f"system:node:{self.name}", ("system:nodes",)
        )
        ca_data = base64.b64encode(certificates.ca_cert.read_bytes()).decode()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {
                        "server": self.cluster.server,
                        "certificate-authority-data": ca_data,
                    },
                }
            ],
            "users": [
                {
                    "name": "kubelet",
                    "user": {"client-certificate": str(cert), "client-key": str(key)},
                }
            ],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "kubelet"}}],
            "current-context": "local",
        }
        (self.workdir / "kubelet.kubeconfig").write_text(json.dumps(kubeconfig, indent=2))
        endpoint = f"unix://{self.socket}"
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": GATEWAY,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "containerRuntimeEndpoint": endpoint,
            "imageServiceEndpoint": endpoint,
            "podLogsDir": str(self.workdir / "pod-logs"),
            "volumePluginDir": str(self.workdir / "volume-plugins"),
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
            },
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(certificates.ca_cert)},
            },
            "authorization": {"mode": "Webhook"},
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
        }
        (self.workdir / "kubelet.yaml").write_text(yaml.safe_dump(config))

    def start_kubelet(self) -> None:
        kubelet = resolve(("kubelet",))["kubelet"]
        self._component(
            "kubelet",
            self._in_namespace(
                [
                    str(kubelet),
                    "--config",
                    str(self.workdir / "kubelet.yaml"),
                    "--kubeconfig",
                    str(self.workdir / "kubelet.kubeconfig"),
                    "--root-dir",
                    str(self.workdir / "kubelet"),
                    "--cert-dir",
                    str(self.workdir / "pki" / "kubelet-serving"),
                    "--hostname-override",
                    self.name,
                    "--node-ip",
                    GATEWAY,
                    "--v",
                    "1",
                ]
            ),
        )

    def node(self) -> dict[str, Any]:
        result = self.cluster.kubectl("get", "node", self.name, "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def is_ready(self) -> bool:
        status = self.node().get("status") or {}
        return any(
            condition.get("type") == "Ready" and condition.get("status") == "True"
            for condition in status.get("conditions") or []
        )

    def wait_ready(self, timeout: float = 120) -> None:
        self.components["kubelet"].wait_until(self.is_ready, f"Ready as node {self.name}", timeout)

    def container_process(self, namespace: str, pod: str, container: str) -> ContainerProcess:
        """The running process of one container of one pod on this node."""
        running = {}
        for line in _run(self._ctr("tasks", "ls"), "ctr tasks ls").splitlines()[1:]:
            task, pid, status = line.split()
            if status == "RUNNING":
                running[task] = int(pid)
        for task, pid in running.items():
            info = json.loads(_run(self._ctr("containers", "info", task), "ctr containers info"))
            labels = info.get("Labels") or {}
            if (
                labels.get("io.kubernetes.pod.namespace") == namespace
                and labels.get("io.kubernetes.pod.name") == pod
                and labels.get("io.kubernetes.container.name") == container
            ):
                return ContainerProcess(pid)
        raise RealNodeError(f"no running container {container} of pod {namespace}/{pod}")

    # -- a simulated reboot ------------------------------------------------------------------------

    def reboot(self) -> str:
        """Stop the kubelet and every container, write a new boot ID, start the kubelet again.

        The node then reports the new bootID and the kubelet restarts its pods' containers,
        exactly as after a real reboot (the Node object and its pods survive, as they do then).
        """
        self._stop_component("kubelet")
        self._kill_containers()
        self.boot_id = str(uuid.uuid4())
        # Written in place: the bind mount in the namespace shows this file's inode.
        with self.boot_id_file.open("r+") as handle:
            handle.write(self.boot_id + "\n")
            handle.truncate()
        self.start_kubelet()
        return self.boot_id

    def _kill_containers(self) -> None:
        if "containerd" not in self.components or not self.components["containerd"].running:
            return
        tasks = subprocess.run(self._ctr("tasks", "ls", "-q"), capture_output=True, text=True)
        for task in tasks.stdout.split():
            subprocess.run(
                self._ctr("tasks", "kill", "-a", "-s", "SIGKILL", task), capture_output=True
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            listing = subprocess.run(self._ctr("tasks", "ls"), capture_output=True, text=True)
            if "RUNNING" not in listing.stdout:
                break
            time.sleep(0.2)

    # -- teardown ----------------------------------------------------------------------------------

    def _stop_component(self, name: str) -> None:
        component = self.components.get(name)
        if component is not None:
            component.stop()

    def stop(self) -> None:
        """Undo everything in order, whatever setup reached; errors are logged, not raised."""
        problems: list[str] = []

        def attempt(what: str, action: Any) -> None:
            try:
                action()
            except Exception as error:  # teardown goes on whatever fails
                problems.append(f"{what}: {error}")

        if "kubelet" in self.components:
            attempt("deleting the node's pods", self._delete_pods)
        attempt("stopping the kubelet", lambda: self._stop_component("kubelet"))
        attempt("killing containers", self._kill_containers)
        attempt("stopping containerd", lambda: self._stop_component("containerd"))
        holder = self.components.get("namespace")
        holder_pid = holder.process.pid if holder and holder.process else None
        attempt(
            "killing the namespace's processes",
            lambda: _kill_mount_namespace(self._namespace, spare=holder_pid),
        )
        attempt("stopping the namespace", lambda: self._stop_component("namespace"))
        if self._snapshot is not None:
            known = self._snapshot.processes
            attempt("waiting for the node's processes to be reaped", lambda: _wait_reaped(known))
            before = self._snapshot.cgroup_folders
            attempt("removing cgroup folders", lambda: _remove_cgroup_folders_not_in(before))
        for kind, _ in reversed(self._cleanups):
            if kind == "nft":
                attempt("deleting the nft table", _delete_nft_table)
            elif kind == "bridge":
                attempt("deleting the bridge", _delete_bridge)
        self._cleanups.clear()
        if self._snapshot is not None:
            sysctls = self._snapshot.sysctls
            attempt("restoring sysctls", lambda: _restore_sysctls(sysctls))
        if not os.environ.get("PITSTOP_KEEP_CLUSTER_DIR"):
            attempt(
                "removing the work folder", lambda: shutil.rmtree(self.workdir, ignore_errors=True)
            )
        if not problems:
            STATE_PATH.unlink(missing_ok=True)
        self._lock.close()
        for problem in problems:
            _log(f"teardown: {problem}")

    def _delete_pods(self) -> None:
        """Delete the node's pods while the kubelet runs, so it stops them the normal way."""
        self.cluster.kubectl(
            "delete",
            "pods",
            "--all-namespaces",
            "--field-selector",
            f"spec.nodeName={self.name}",
            "--grace-period=1",
            "--wait=true",
            "--timeout=30s",
            check=False,
            timeout=45,
        )

    def host_differences(self) -> list[str]:
        """After stop(): what this node left on the machine (empty when all is as it was)."""
        assert self._snapshot is not None
        return self._snapshot.differences(HostSnapshot.take())


def _kill_mount_namespace(
    namespace: str, spare: int | None = None, only: tuple[str, ...] = ()
) -> None:
    """SIGKILL what still lives in the node's mount namespace (shims, stray helpers); with
    `only`, just the processes of those names (a stale namespace's number may be reused)."""
    if not namespace:
        return
    deadline = time.monotonic() + 10
    left: list[int] = []
    while time.monotonic() < deadline:
        left = [
            pid
            for pid in _processes_in_mount_namespace(namespace)
            if pid != spare and (not only or _command_name(pid).startswith(only))
        ]
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    raise RealNodeError(f"processes in the node's mount namespace would not die: {left}")


def _wait_reaped(known: frozenset[str], timeout: float = 15) -> None:
    """Wait until the killed shims are out of the process table, not only dead.

    A shim is an orphan (its parent is PID 1): once killed it stays a zombie until PID 1 reaps
    it, which some inits do only every second or two (seen here: 1.7 s). Teardown ends when the
    machine's process table is as it was, not when the zombies are merely on their way out.
    """
    deadline = time.monotonic() + timeout
    while left := [entry for entry in _node_processes() if entry not in known]:
        if time.monotonic() > deadline:
            raise RealNodeError(f"node processes still in the process table: {left}")
        time.sleep(0.1)


def _remove_cgroup_folders_not_in(before: frozenset[Path] | set[Path], timeout: float = 20) -> None:
    """Kill what runs in the cgroup folders made since `before`, and remove them (deepest first).

    A folder is busy while a child folder or a dying process is left in it, so every round
    tries the whole tree again until it is gone; what will not go is an error, never silence.
    """
    deadline = time.monotonic() + timeout
    while left := sorted(_cgroup_folders() - set(before)):
        for folder in left:
            with contextlib.suppress(OSError):
                children = [path for path in folder.rglob("*") if path.is_dir()]
                for child in [*sorted(children, key=lambda path: -len(path.parts)), folder]:
                    _kill_cgroup(child)
                    with contextlib.suppress(OSError):
                        child.rmdir()
        if time.monotonic() > deadline:
            busy = {str(folder): _cgroup_processes(folder) for folder in left}
            raise RealNodeError(f"cgroup folders would not go (folder: processes): {busy}")
        time.sleep(0.1)


def _cgroup_processes(folder: Path) -> list[str]:
    with contextlib.suppress(OSError):
        return (folder / "cgroup.procs").read_text().split()
    return []


def _delete_nft_table() -> None:
    subprocess.run(["nft", "delete", "table", "ip", NFT_TABLE], capture_output=True)


def _delete_bridge() -> None:
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)


def _restore_sysctls(values: dict[str, str]) -> None:
    for name, value in values.items():
        path = Path("/proc/sys") / name
        if path.read_text().strip() != value:
            path.write_text(value + "\n")


def recover_stale_node() -> None:
    """Undo what a killed run left (see STATE_PATH). Call with the real-node lock held."""
    state = json.loads(STATE_PATH.read_text())
    _log(f"undoing what a killed real-node run left behind ({STATE_PATH})")
    _kill_mount_namespace(
        state.get("namespace", ""), only=("containerd", "kubelet", "sleep", "nsenter", "unshare")
    )
    workdir = state.get("workdir", "")
    if workdir:
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if entry.name.isdigit() and workdir in command:
                    os.kill(int(entry.name), signal.SIGKILL)
    _remove_cgroup_folders_not_in({Path(folder) for folder in state.get("cgroupFolders", [])})
    _delete_nft_table()
    _delete_bridge()
    _restore_sysctls(state.get("sysctls", {}))
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    STATE_PATH.unlink()


def _kill_cgroup(folder: Path) -> None:
    for pid in _cgroup_processes(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def real_node_lock() -> Iterator[None]:
    """One real node per machine at a time: the bridge, nft table and sysctls are shared."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_PATH.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log(f"another real node runs on this machine; waiting for {LOCK_PATH}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def real_node(cluster: ControlPlane, **options: Any) -> Iterator[RealNode]:
    node = RealNode(cluster, **options)
    with node:
        yield node


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Can this machine host a real node?")
    parser.add_argument("--check", action="store_true", help="say why not, or that it can")
    parser.parse_args(argv)
    ensure_host_tools()
    reason = unavailable_reason()
    print(reason or "this machine can host a real node")
    return 1 if reason else 0


if __name__ == "__main__":
    raise SystemExit(main())
