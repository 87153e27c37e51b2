"""`pitstop-reboot`, with fakes: a local D-Bus peer, an injected kill and exec, a temp folder.

Nothing here signals PID 1 or reboots this machine. The D-Bus messages are decoded by a small
decoder written here independently of the helper's encoder, and (when dbus-daemon is installed)
sent through a real, private bus to a fake logind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import reboot_helper.main as reboot_helper
from reboot_helper.main import DBusError, reboot_over_dbus

# -- an independent D-Bus codec for the tests ------------------------------------------------------


@dataclass
class Decoded:
    endianness: bytes
    type: int
    flags: int
    version: int
    serial: int
    fields: dict[int, tuple[str, Any]] = field(default_factory=dict)
    body: bytes = b""


def decode(data: bytes) -> tuple[Decoded, int]:
    """Decode one little-endian message; returns it and its total length."""
    assert data[0:1] == b"l", "messages are little-endian"
    message_type, flags, version = data[1], data[2], data[3]
    body_length, serial, array_length = struct.unpack_from("<III", data, 4)
    position = 16
    assert position % 8 == 0
    fields: dict[int, tuple[str, Any]] = {}
    end = 16 + array_length
    while position < end:
        assert position % 8 == 0, "each header field struct starts on an 8-byte boundary"
        code = data[position]
        signature_length = data[position + 1]
        signature = data[position + 2 : position + 2 + signature_length].decode()
        assert data[position + 2 + signature_length] == 0
        position += 3 + signature_length
        if signature in ("s", "o"):
            position += -position % 4
            (length,) = struct.unpack_from("<I", data, position)
            value: Any = data[position + 4 : position + 4 + length].decode()
            assert data[position + 4 + length] == 0
            position += 5 + length
        elif signature == "g":
            length = data[position]
            value = data[position + 1 : position + 1 + length].decode()
            position += 2 + length
        elif signature == "u":
            position += -position % 4
            (value,) = struct.unpack_from("<I", data, position)
            position += 4
        else:
            raise AssertionError(f"unexpected header field type {signature}")
        fields[code] = (signature, value)
        if position < end:
            position += -position % 8
    assert position == end, "the array length covers the fields exactly"
    body_start = end + (-end % 8)
    assert all(byte == 0 for byte in data[end:body_start]), "header padding is zeros"
    body = data[body_start : body_start + body_length]
    assert len(body) == body_length
    return Decoded(data[0:1], message_type, flags, version, serial, fields, body), (
        body_start + body_length
    )


def _pad(buffer: bytearray, boundary: int) -> None:
    buffer.extend(b"\0" * (-len(buffer) % boundary))


def encode_reply(
    message_type: int,
    serial: int,
    reply_serial: int | None,
    error_name: str | None = None,
    text: str | None = None,
    destination: str | None = None,
    member: tuple[str, str, str] | None = None,
) -> bytes:
    """A METHOD_RETURN, ERROR or SIGNAL from the fake peer (body: one string, if any)."""
    body = bytearray()
    if text is not None:
        encoded = text.encode()
        body.extend(struct.pack("<I", len(encoded)) + encoded + b"\0")
    fields: list[tuple[int, str, Any]] = []
    if member is not None:
        path, interface, name = member
        fields += [(1, "o", path), (2, "s", interface), (3, "s", name)]
    if error_name is not None:
        fields.append((4, "s", error_name))
    if reply_serial is not None:
        fields.append((5, "u", reply_serial))
    if destination is not None:
        fields.append((6, "s", destination))
    if text is not None:
        fields.append((8, "g", "s"))
    header = bytearray(b"l" + bytes([message_type, 1, 1]))
    header.extend(struct.pack("<II", len(body), serial))
    header.extend(b"\0\0\0\0")
    start = len(header)
    for code, signature, value in fields:
        _pad(header, 8)
        header.extend(bytes([code, 1]) + signature.encode() + b"\0")
        if signature in ("s", "o"):
            _pad(header, 4)
            encoded = value.encode()
            header.extend(struct.pack("<I", len(encoded)) + encoded + b"\0")
        elif signature == "g":
            header.extend(bytes([len(value)]) + value.encode() + b"\0")
        else:
            _pad(header, 4)
            header.extend(struct.pack("<I", value))
    struct.pack_into("<I", header, 12, len(header) - start)
    _pad(header, 8)
    return bytes(header + body)


# -- a fake bus on a unix socket -----------------------------------------------------------------


class FakeBus:
    """Speaks just enough D-Bus: AUTH EXTERNAL, Hello, then one answer to the Reboot call."""

    def __init__(self, path: Path, answer: str) -> None:
        self.path = path
        self.answer = answer  # "ok" | "denied" | "hang-up"
        self.auth_line = b""
        self.messages: list[Decoded] = []
        self.error: BaseException | None = None
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._server.accept()
            with connection:
                connection.settimeout(10)
                buffer = bytearray()

                def fill(minimum: int) -> None:
                    while len(buffer) < minimum:
                        chunk = connection.recv(4096)
                        if not chunk:
                            raise EOFError
                        buffer.extend(chunk)

                def line() -> bytes:
                    while b"\r\n" not in buffer:
                        fill(len(buffer) + 1)
                    end = buffer.index(b"\r\n") + 2
                    text = bytes(buffer[:end])
                    del buffer[:end]
                    return text

                def message() -> Decoded:
                    fill(16)
                    (array_length,) = struct.unpack_from("<I", buffer, 12)
                    (body_length,) = struct.unpack_from("<I", buffer, 4)
                    header_end = 16 + array_length
                    fill(header_end + (-header_end % 8) + body_length)
                    decoded, length = decode(bytes(buffer))
                    del buffer[:length]
                    self.messages.append(decoded)
                    return decoded

                self.auth_line = line()
                connection.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
                assert line() == b"BEGIN\r\n"
                hello = message()
                connection.sendall(
                    encode_reply(
                        4,
                        1,
                        None,
                        text=":1.7",
                        destination=":1.7",
                        member=("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameAcquired"),
                    )
                )
                connection.sendall(encode_reply(2, 2, hello.serial, text=":1.7"))
                reboot = message()
                if self.answer == "ok":
                    connection.sendall(encode_reply(2, 3, reboot.serial))
                elif self.answer == "denied":
                    connection.sendall(
                        encode_reply(
                            3,
                            3,
                            reboot.serial,
                            error_name="org.freedesktop.DBus.Error.AccessDenied",
                            text="Interactive authentication required.",
                        )
                    )
        except BaseException as error:  # reported by the test through self.error
            self.error = error
        finally:
            self._server.close()

    def join(self) -> None:
        self._thread.join(10)
        if self.error is not None:
            raise self.error


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    folder = Path(f"/tmp/pitstop-dbus-{os.getpid()}-{time.monotonic_ns()}")
    folder.mkdir()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_dbus_authenticates_says_hello_and_calls_logind_reboot(socket_dir: Path) -> None:
    bus = FakeBus(socket_dir / "bus", "ok")
    result = reboot_over_dbus(str(socket_dir / "bus"), uid=0, timeout=10)
    bus.join()
    assert "accepted" in result and ":1.7" in result
    # NUL byte, then AUTH EXTERNAL with the uid "0" hex-encoded.
    assert bus.auth_line == b"\0AUTH EXTERNAL 30\r\n"
    hello, reboot = bus.messages
    assert (hello.type, hello.version, hello.flags) == (1, 1, 0)
    assert hello.fields == {
        1: ("o", "/org/freedesktop/DBus"),
        2: ("s", "org.freedesktop.DBus"),
        3: ("s", "Hello"),
        6: ("s", "org.freedesktop.DBus"),
    }
    assert hello.body == b""
    assert reboot.type == 1 and reboot.serial != hello.serial
    assert reboot.fields == {
        1: ("o", "/org/freedesktop/login1"),
        2: ("s", "org.freedesktop.login1.Manager"),
        3: ("s", "Reboot"),
        6: ("s", "org.freedesktop.login1"),
        8: ("g", "b"),
    }
    assert reboot.body == struct.pack("<I", 0), "Reboot(interactive=false)"


def test_dbus_uses_the_callers_uid_by_default(socket_dir: Path) -> None:
    bus = FakeBus(socket_dir / "bus", "ok")
    reboot_over_dbus(str(socket_dir / "bus"), timeout=10)
    bus.join()
    assert bus.auth_line == b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n"


def test_dbus_reports_logind_refusing(socket_dir: Path) -> None:
    bus = FakeBus(socket_dir / "bus", "denied")
    with pytest.raises(DBusError, match="AccessDenied: Interactive authentication required"):
        reboot_over_dbus(str(socket_dir / "bus"), uid=0, timeout=10)
    bus.join()
    assert reboot_helper.main(["dbus", "--socket", str(socket_dir / "missing")]) == 1


def test_dbus_counts_a_hang_up_after_the_call_as_a_reboot_under_way(socket_dir: Path) -> None:
    bus = FakeBus(socket_dir / "bus", "hang-up")
    assert "closed by shutdown" in reboot_over_dbus(str(socket_dir / "bus"), uid=0, timeout=10)
    bus.join()


def test_the_system_bus_address_is_read_from_the_environment() -> None:
    assert reboot_helper.system_bus_socket_path({}) == "/run/dbus/system_bus_socket"
    address = "tcp:host=x;unix:abstract=/no,guid=1;unix:path=/host/bus,guid=2"
    assert reboot_helper.system_bus_socket_path({"DBUS_SYSTEM_BUS_ADDRESS": address}) == (
        "/host/bus"
    )


@pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="dbus-daemon not installed")
def test_a_real_bus_routes_the_reboot_call_to_logind(socket_dir: Path) -> None:
    """Through a real dbus-daemon: unknown logind is an error; a fake logind gets the call."""
    address = f"unix:path={socket_dir / 'bus'}"
    daemon = subprocess.Popen(
        ["dbus-daemon", "--session", f"--address={address}", "--nofork", "--nopidfile"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not (socket_dir / "bus").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(DBusError, match=r"ServiceUnknown.*org\.freedesktop\.login1"):
            reboot_over_dbus(str(socket_dir / "bus"), timeout=10)

        received: list[Any] = []
        logind = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        logind.settimeout(10)
        logind.connect(str(socket_dir / "bus"))
        reboot_helper._authenticate(logind, os.getuid())
        logind.sendall(
            reboot_helper.encode_method_call(
                1, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello"
            )
        )
        reboot_helper._await_reply(logind, 1)
        logind.sendall(
            reboot_helper.encode_method_call(
                2,
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "RequestName",
                "su",
                ["org.freedesktop.login1", 4],
            )
        )
        reboot_helper._await_reply(logind, 2)

        def serve() -> None:
            while True:
                message = reboot_helper.read_message(logind)
                if message.type == 1:
                    received.append(message)
                    sender = str(message.fields[7])
                    logind.sendall(encode_reply(2, 3, message.serial, destination=sender))
                    return

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        assert "accepted" in reboot_over_dbus(str(socket_dir / "bus"), timeout=10)
        server.join(10)
        (call,) = received
        assert call.fields[1] == "/org/freedesktop/login1"
        assert call.fields[2] == "org.freedesktop.login1.Manager"
        assert call.fields[3] == "Reboot"
        assert call.fields[8] == "b" and call.body == b"\0\0\0\0"
        logind.close()
    finally:
        daemon.terminate()
        daemon.wait(10)


# -- signal, command, approve ----------------------------------------------------------------------


def test_signal_sends_sigrtmin_plus_5_to_pid_1() -> None:
    sent: list[tuple[int, int]] = []
    number = reboot_helper.send_reboot_signal(kill=lambda pid, sig: sent.append((pid, sig)))
    assert sent == [(1, int(signal.SIGRTMIN) + 5)]
    assert number == int(signal.SIGRTMIN) + 5


def test_command_execs_nsenter_into_pid_1s_mount_namespace() -> None:
    executed: list[tuple[str, list[str]]] = []

    class ReplacedError(Exception):
        pass

    def fake_exec(program: str, arguments: list[str]) -> None:
        executed.append((program, arguments))
        raise ReplacedError

    with pytest.raises(ReplacedError):
        reboot_helper.run_reboot_command(execute=fake_exec)
    assert executed == [("nsenter", ["nsenter", "-m/proc/1/ns/mnt", "--", "systemctl", "reboot"])]


def test_approve_writes_the_file_atomically(tmp_path: Path) -> None:
    directory = tmp_path / "approvals"
    code = reboot_helper.main(
        ["approve", "--directory", str(directory), "--boot-id", "abc-123", "--node", "w1"]
    )
    assert code == 0
    assert [path.name for path in directory.iterdir()] == ["reboot-abc-123"]
    body = json.loads((directory / "reboot-abc-123").read_text())
    assert body["bootID"] == "abc-123" and body["node"] == "w1"
    assert body["approvedAt"].endswith("Z")
    assert (directory / "reboot-abc-123").stat().st_mode & 0o777 == 0o644


def test_approve_leaves_no_partial_file_when_the_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: list[tuple[str, str]] = []

    def failing_replace(source: str, target: str) -> None:
        # The temporary file is complete and in the same folder when it is renamed.
        assert json.loads(Path(source).read_text())["bootID"] == "abc"
        assert Path(source).parent == Path(target).parent
        renamed.append((source, target))
        raise OSError("disk full")

    monkeypatch.setattr(reboot_helper.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        reboot_helper.write_approval(tmp_path, "abc")
    assert renamed and list(tmp_path.iterdir()) == []


def test_approve_refuses_a_boot_id_that_is_a_path(tmp_path: Path) -> None:
    assert (
        reboot_helper.main(
            ["approve", "--directory", str(tmp_path), "--boot-id", "../../etc/passwd"]
        )
        == 1
    )
    assert list(tmp_path.iterdir()) == []


# -- the boot check: a Job for a boot that is over does nothing ------------------------------------


@pytest.fixture
def boot_id_file(tmp_path: Path) -> Path:
    """The node's current boot, as the kernel shows it (with its trailing newline)."""
    path = tmp_path / "boot_id"
    path.write_text("b00t-now\n")
    return path


@pytest.fixture
def reboots(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the reboots main() starts by signal or command instead of doing them."""
    started: list[str] = []

    def fake_signal() -> int:
        started.append("signal")
        return 42

    def fake_command() -> None:
        started.append("command")

    monkeypatch.setattr(reboot_helper, "send_reboot_signal", fake_signal)
    monkeypatch.setattr(reboot_helper, "run_reboot_command", fake_command)
    return started


@pytest.mark.parametrize("method", ["signal", "command"])
def test_a_job_for_an_earlier_boot_does_not_reboot(
    method: str, boot_id_file: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = reboot_helper.main([method, "--boot-id", "b00t-before"], boot_id_file=boot_id_file)
    assert code == 0 and reboots == []
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"pitstop-reboot {method}: node already rebooted since this Job was made: "
        "boot b00t-now, Job for boot b00t-before; nothing to do"
    ]


def test_a_dbus_job_for_an_earlier_boot_does_not_touch_the_bus(
    socket_dir: Path, boot_id_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bus = socket_dir / "bus"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(bus))
        listener.listen(1)
        listener.settimeout(0.2)
        code = reboot_helper.main(
            ["dbus", "--socket", str(bus), "--boot-id", "b00t-before"], boot_id_file=boot_id_file
        )
        assert code == 0
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody connected
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["signal", "command"])
def test_a_job_for_the_current_boot_reboots(
    method: str, boot_id_file: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert reboot_helper.main([method, "--boot-id", "b00t-now"], boot_id_file=boot_id_file) == 0
    assert reboots == [method]
    assert "boot b00t-now is the one this Job is for" in capsys.readouterr().out


def test_a_dbus_job_for_the_current_boot_goes_to_the_bus(
    socket_dir: Path, boot_id_file: Path
) -> None:
    # The socket is missing: reaching for it (exit 1) shows the reboot was attempted.
    arguments = ["dbus", "--socket", str(socket_dir / "missing"), "--boot-id", "b00t-now"]
    assert reboot_helper.main(arguments, boot_id_file=boot_id_file) == 1


def test_an_unreadable_boot_id_reboots_as_before_and_says_so(
    tmp_path: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-boot-id"
    assert reboot_helper.main(["signal", "--boot-id", "b00t-before"], boot_id_file=missing) == 0
    assert reboots == ["signal"]
    assert f"cannot read the boot ID from {missing}" in capsys.readouterr().out


def test_an_empty_boot_id_file_reboots_as_before(tmp_path: Path, reboots: list[str]) -> None:
    empty = tmp_path / "boot_id"
    empty.write_text("\n")
    assert reboot_helper.main(["command", "--boot-id", "b00t-before"], boot_id_file=empty) == 0
    assert reboots == ["command"]


def test_a_job_without_a_boot_id_reboots_as_before(
    boot_id_file: Path, reboots: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # The shape an older brain creates during an upgrade.
    assert reboot_helper.main(["signal"], boot_id_file=boot_id_file) == 0
    assert reboots == ["signal"]
    assert "no --boot-id" in capsys.readouterr().out


def test_the_default_boot_id_file_is_the_kernels() -> None:
    assert Path("/proc/sys/kernel/random/boot_id") == reboot_helper.BOOT_ID_FILE
    check = reboot_helper.check_boot(reboot_helper.BOOT_ID_FILE.read_text().strip())
    assert check.reboot and "is the one this Job is for" in check.message
