"""`pitstop-reboot`: what runs inside the reboot Job's container, one sub-command per method.

- `dbus`: ask logind to reboot (org.freedesktop.login1.Manager.Reboot) over the host's system
  bus socket. A minimal D-Bus client in pure Python: the image needs no D-Bus library, and the
  container needs no capability, only the socket and uid 0 (logind lets root reboot).
- `signal`: SIGRTMIN+5 to PID 1, which systemd treats as "reboot" (needs hostPID and CAP_KILL).
- `command`: `nsenter` into PID 1's mount namespace and run `systemctl reboot` (privileged).
- `approve`: write an approval file for the host agent; Kubernetes never holds reboot power.

`dbus`, `signal` and `command` take `--boot-id`: the boot the Job was made for. If the node has
booted since (the Job's pod ran only once the node came back from a reboot already under way),
they do nothing and exit 0: a Job made for a boot that is over must not reboot the next one.
The boot ID is kernel-wide, so /proc/sys/kernel/random/boot_id inside the container is the
host's. If it cannot be read, the reboot goes on as asked (and says so).

Standard library only: this runs in a small image, once per reboot.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import struct
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

DEFAULT_SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
SYSTEM_BUS_ADDRESS_VARIABLE = "DBUS_SYSTEM_BUS_ADDRESS"
LOGIND_SERVICE = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER_INTERFACE = "org.freedesktop.login1.Manager"
BUS_SERVICE = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"
REBOOT_SIGNAL_OFFSET = 5  # systemd: SIGRTMIN+5 means "reboot"
NSENTER_COMMAND = ["nsenter", "-m/proc/1/ns/mnt", "--", "systemctl", "reboot"]
APPROVAL_PREFIX = "reboot-"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
_BOOT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# -- D-Bus wire format (little-endian; replies in either byte order are read) --------------------


class MessageType:
    METHOD_CALL = 1
    METHOD_RETURN = 2
    ERROR = 3
    SIGNAL = 4


class HeaderField:
    PATH = 1
    INTERFACE = 2
    MEMBER = 3
    ERROR_NAME = 4
    REPLY_SERIAL = 5
    DESTINATION = 6
    SENDER = 7
    SIGNATURE = 8


_HEADER_FIELD_TYPES = {
    HeaderField.PATH: "o",
    HeaderField.INTERFACE: "s",
    HeaderField.MEMBER: "s",
    HeaderField.ERROR_NAME: "s",
    HeaderField.REPLY_SERIAL: "u",
    HeaderField.DESTINATION: "s",
    HeaderField.SENDER: "s",
    HeaderField.SIGNATURE: "g",
}


class DBusError(Exception):
    """The bus or logind refused, or the conversation broke."""


class _Writer:
    """Appends D-Bus values with the alignment the format requires (relative to message start)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def align(self, boundary: int) -> None:
        self.data.extend(b"\0" * (-len(self.data) % boundary))

    def byte(self, value: int) -> None:
        self.data.append(value)

    def uint32(self, value: int) -> None:
        self.align(4)
        self.data.extend(struct.pack("<I", value))

    def string(self, value: str) -> None:
        encoded = value.encode()
        self.uint32(len(encoded))
        self.data.extend(encoded + b"\0")

    def signature(self, value: str) -> None:
        encoded = value.encode()
        self.byte(len(encoded))
        self.data.extend(encoded + b"\0")

    def value(self, type_code: str, value: str | int | bool) -> None:
        if type_code in ("s", "o"):
            self.string(str(value))
        elif type_code == "g":
            self.signature(str(value))
        elif type_code in ("u", "b"):
            self.uint32(int(value))
        else:
            raise ValueError(f"unsupported D-Bus type {type_code!r}")


def encode_method_call(
    serial: int,
    destination: str,
    path: str,
    interface: str,
    member: str,
    signature: str = "",
    arguments: Sequence[str | int | bool] = (),
) -> bytes:
    """One METHOD_CALL message; arguments of type s, o, g, u or b."""
    body = _Writer()
    for type_code, argument in zip(signature, arguments, strict=True):
        body.value(type_code, argument)
    fields: list[tuple[int, str | int]] = [
        (HeaderField.PATH, path),
        (HeaderField.INTERFACE, interface),
        (HeaderField.MEMBER, member),
        (HeaderField.DESTINATION, destination),
    ]
    if signature:
        fields.append((HeaderField.SIGNATURE, signature))
    header = _Writer()
    header.data.extend(b"l")
    header.byte(MessageType.METHOD_CALL)
    header.byte(0)  # flags: a reply is expected
    header.byte(1)  # protocol version
    header.uint32(len(body.data))
    header.uint32(serial)
    array_length_at = len(header.data)
    header.uint32(0)  # the header fields' array length, filled in below
    header.align(8)
    array_start = len(header.data)
    for code, value in fields:
        header.align(8)  # each field is a STRUCT
        header.byte(code)
        header.signature(_HEADER_FIELD_TYPES[code])
        header.value(_HEADER_FIELD_TYPES[code], value)
    struct.pack_into("<I", header.data, array_length_at, len(header.data) - array_start)
    header.align(8)  # the body starts on an 8-byte boundary
    return bytes(header.data + body.data)


@dataclass
class Message:
    type: int
    serial: int
    fields: dict[int, str | int] = field(default_factory=dict)
    body: bytes = b""
    byte_order: str = "<"

    def first_string(self) -> str:
        """The body's first argument when it is a string (an error's message, Hello's name)."""
        signature = str(self.fields.get(HeaderField.SIGNATURE, ""))
        if not signature.startswith("s") or len(self.body) < 4:
            return ""
        (length,) = struct.unpack_from(f"{self.byte_order}I", self.body, 0)
        return self.body[4 : 4 + length].decode(errors="replace")


class _Reader:
    def __init__(self, data: bytes, byte_order: str) -> None:
        self.data = data
        self.position = 0
        self.order = byte_order

    def align(self, boundary: int) -> None:
        self.position += -self.position % boundary

    def byte(self) -> int:
        value = self.data[self.position]
        self.position += 1
        return value

    def uint32(self) -> int:
        self.align(4)
        (value,) = struct.unpack_from(f"{self.order}I", self.data, self.position)
        self.position += 4
        return int(value)

    def string(self) -> str:
        length = self.uint32()
        text = self.data[self.position : self.position + length].decode(errors="replace")
        self.position += length + 1
        return text

    def signature(self) -> str:
        length = self.byte()
        text = self.data[self.position : self.position + length].decode()
        self.position += length + 1
        return text

    def value(self, type_code: str) -> str | int:
        if type_code in ("s", "o"):
            return self.string()
        if type_code == "g":
            return self.signature()
        if type_code in ("u", "b", "i"):
            return self.uint32()
        if type_code == "y":
            return self.byte()
        raise DBusError(f"unsupported type {type_code!r} in a message header")


def _receive_exactly(connection: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = connection.recv(count - len(chunks))
        if not chunk:
            raise EOFError("the bus closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def read_message(connection: socket.socket) -> Message:
    """Read one whole message from the socket."""
    fixed = _receive_exactly(connection, 16)
    order = {ord("l"): "<", ord("B"): ">"}.get(fixed[0])
    if order is None:
        raise DBusError(f"bad byte-order mark {fixed[0]!r}")
    body_length, serial, fields_length = struct.unpack_from(f"{order}III", fixed, 4)
    header_rest = fields_length + (-(16 + fields_length) % 8)
    data = fixed + _receive_exactly(connection, header_rest + body_length)
    reader = _Reader(data, order)
    reader.position = 16
    fields: dict[int, str | int] = {}
    while reader.position < 16 + fields_length:
        reader.align(8)
        code = reader.byte()
        type_code = reader.signature()
        fields[code] = reader.value(type_code)
    body = data[16 + header_rest :]
    return Message(type=fixed[1], serial=serial, fields=fields, body=body, byte_order=order)


def _authenticate(connection: socket.socket, uid: int) -> None:
    """SASL EXTERNAL: the bus checks our uid from the socket's credentials."""
    connection.sendall(b"\0" + b"AUTH EXTERNAL " + str(uid).encode().hex().encode() + b"\r\n")
    reply = bytearray()
    while not reply.endswith(b"\r\n"):
        chunk = connection.recv(256)
        if not chunk:
            raise DBusError("the bus closed the connection during authentication")
        reply.extend(chunk)
    if not reply.startswith(b"OK "):
        raise DBusError(f"the bus refused authentication: {reply.decode(errors='replace').strip()}")
    connection.sendall(b"BEGIN\r\n")


def _await_reply(connection: socket.socket, serial: int) -> Message:
    """Skip signals (NameAcquired, say) until the reply to `serial`; raise on an ERROR."""
    while True:
        message = read_message(connection)
        if message.fields.get(HeaderField.REPLY_SERIAL) != serial:
            continue
        if message.type == MessageType.ERROR:
            name = message.fields.get(HeaderField.ERROR_NAME, "unknown error")
            raise DBusError(f"{name}: {message.first_string()}")
        return message


def system_bus_socket_path(environment: dict[str, str] | None = None) -> str:
    """The socket from $DBUS_SYSTEM_BUS_ADDRESS (`unix:path=...`), else the standard one."""
    address = (environment if environment is not None else dict(os.environ)).get(
        SYSTEM_BUS_ADDRESS_VARIABLE, ""
    )
    for part in address.split(";"):
        if part.startswith("unix:"):
            for option in part[len("unix:") :].split(","):
                key, _, value = option.partition("=")
                if key == "path" and value:
                    return value
    return DEFAULT_SYSTEM_BUS_SOCKET


def reboot_over_dbus(socket_path: str, uid: int | None = None, timeout: float = 30.0) -> str:
    """Call logind's Reboot(false); returns a line to log. Raises DBusError if refused."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(socket_path)
        _authenticate(connection, os.getuid() if uid is None else uid)
        connection.sendall(encode_method_call(1, BUS_SERVICE, BUS_PATH, BUS_SERVICE, "Hello"))
        unique_name = _await_reply(connection, 1).first_string()
        connection.sendall(
            encode_method_call(
                2, LOGIND_SERVICE, LOGIND_PATH, LOGIND_MANAGER_INTERFACE, "Reboot", "b", [False]
            )
        )
        try:
            _await_reply(connection, 2)
        except EOFError:
            # The system may go down before logind's answer reaches us: the reboot is under way.
            return f"logind accepted the reboot (connection {unique_name} closed by shutdown)"
    return f"logind accepted the reboot (as {unique_name})"


# -- the other methods --------------------------------------------------------------------------


def send_reboot_signal(kill: Callable[[int, int], None] = os.kill) -> int:
    """Send SIGRTMIN+5 to PID 1 (systemd, with hostPID); returns the signal number sent."""
    number = int(signal.SIGRTMIN) + REBOOT_SIGNAL_OFFSET
    kill(1, number)
    return number


def run_reboot_command(
    execute: Callable[[str, list[str]], object] = os.execvp,
) -> NoReturn:
    """Replace this process with `nsenter ... systemctl reboot` in the host's mount namespace."""
    execute(NSENTER_COMMAND[0], list(NSENTER_COMMAND))
    raise RuntimeError("exec returned")


def approval_path(directory: Path, boot_id: str) -> Path:
    if not _BOOT_ID_PATTERN.match(boot_id):
        raise ValueError(f"refusing a boot ID that is not a plain identifier: {boot_id!r}")
    return directory / f"{APPROVAL_PREFIX}{boot_id}"


def write_approval(
    directory: Path, boot_id: str, node: str = "", now: datetime | None = None
) -> Path:
    """Atomically write `<directory>/reboot-<bootID>`: a temporary file renamed into place, so
    the host agent never reads half a file."""
    target = approval_path(directory, boot_id)
    body = {
        "bootID": boot_id,
        "node": node,
        "approvedAt": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=directory)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(body, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)
    return target


@dataclass(frozen=True)
class BootCheck:
    """Whether to go on with the reboot, and the line that says why."""

    reboot: bool
    message: str


def check_boot(job_boot_id: str | None, boot_id_file: Path = BOOT_ID_FILE) -> BootCheck:
    """Compare the boot the Job is for with the node's current boot (read from `boot_id_file`).

    Only a boot ID read and found different stops the reboot: the node has rebooted since the
    Job was made. A Job without a boot ID (made by an older brain) or an unreadable boot ID
    file goes on as before this check existed, saying so.
    """
    if job_boot_id is None:
        return BootCheck(True, "the Job names no boot (no --boot-id): rebooting without checking")
    try:
        current = boot_id_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        return BootCheck(
            True, f"cannot read the boot ID from {boot_id_file} ({error}): rebooting as asked"
        )
    if not current:
        return BootCheck(True, f"{boot_id_file} is empty: rebooting as asked")
    if current != job_boot_id.strip():
        return BootCheck(
            False,
            f"node already rebooted since this Job was made: boot {current}, "
            f"Job for boot {job_boot_id}; nothing to do",
        )
    return BootCheck(True, f"boot {current} is the one this Job is for: rebooting")


# -- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pitstop-reboot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="method", required=True)
    dbus = commands.add_parser("dbus", help="ask logind to reboot over the system bus")
    dbus.add_argument("--socket", default=None, help="system bus socket (default: standard)")
    signal_method = commands.add_parser("signal", help="send SIGRTMIN+5 to PID 1 (systemd)")
    command = commands.add_parser("command", help="nsenter into PID 1 and run systemctl reboot")
    for rebooting in (dbus, signal_method, command):
        rebooting.add_argument(
            "--boot-id",
            default=None,
            help="the boot this Job is for: do nothing if the node has booted since",
        )
    approve = commands.add_parser("approve", help="write an approval file for the host agent")
    approve.add_argument("--directory", required=True, type=Path)
    approve.add_argument("--boot-id", required=True)
    approve.add_argument("--node", default=os.environ.get("NODE_NAME", ""))
    return parser


def main(argv: Sequence[str] | None = None, boot_id_file: Path = BOOT_ID_FILE) -> int:
    arguments = _parser().parse_args(argv)
    if arguments.method != "approve":
        # The host agent checks the boot itself for approvals.
        check = check_boot(arguments.boot_id, boot_id_file)
        print(f"pitstop-reboot {arguments.method}: {check.message}", flush=True)
        if not check.reboot:
            return 0
    try:
        if arguments.method == "dbus":
            print(reboot_over_dbus(arguments.socket or system_bus_socket_path()), flush=True)
        elif arguments.method == "signal":
            number = send_reboot_signal()
            print(f"sent signal {number} (SIGRTMIN+5) to PID 1", flush=True)
        elif arguments.method == "command":
            print(f"running {' '.join(NSENTER_COMMAND)}", flush=True)
            run_reboot_command()
        else:
            path = write_approval(arguments.directory, arguments.boot_id, arguments.node)
            print(f"wrote approval {path}", flush=True)
    except (DBusError, OSError, ValueError, EOFError) as error:
        print(f"pitstop-reboot {arguments.method}: {error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
