"""Log output: `--log-format json` lines carry the object as fields; levels in any case;
Warning Events logged at WARNING; kopf's own records go through the same formatter."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest

from brain.events import EventRecorder, node_reference, window_reference
from brain.settings import SettingsError, load_settings
from pitstop import logs


@pytest.fixture
def captured() -> Iterator[Callable[[str], io.StringIO]]:
    """Configure the root logger as a program would; restore it afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)

    def configure(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        logs.configure("debug", log_format, stream)
        return stream

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_name_time_level_logger_message_and_object(
    captured: Callable[[str], io.StringIO],
) -> None:
    stream = captured("JSON")
    logging.getLogger("pitstop.test").warning(
        "node %s failed\nsecond line", "n1", extra={"node": "n1", "window": "nights"}
    )
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("pitstop.test").exception("pass failed")
    first, second = lines(stream)
    assert first["level"] == "WARNING"
    assert first["logger"] == "pitstop.test"
    assert first["message"] == "node n1 failed\nsecond line"
    assert (first["node"], first["window"]) == ("n1", "nights")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "RuntimeError: boom" in second["exception"]


def test_the_window_task_names_its_window_on_every_line(
    captured: Callable[[str], io.StringIO],
) -> None:
    stream = captured("json")

    async def window_task() -> None:
        logs.current_window.set("weekend")
        logging.getLogger("pitstop.reconciler").info("pass")
        # a thread started by the task (every API call) keeps the window too
        await asyncio.to_thread(logging.getLogger("pitstop.kube").info, "call")

    asyncio.run(window_task())
    logging.getLogger("pitstop.brain").info("outside")
    inside, thread, outside = [line for line in lines(stream) if line["logger"] != "asyncio"]
    assert inside["window"] == thread["window"] == "weekend"
    assert "window" not in outside


def test_kopf_records_go_through_the_same_formatter(
    captured: Callable[[str], io.StringIO],
) -> None:
    stream = captured("json")
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n7", "uid": "u"}}
    kopf_logger = kopf.ObjectLogger(body=kopf.Body(body), settings=kopf.OperatorSettings())
    kopf_logger.warning("handler failed")
    (line,) = lines(stream)
    assert line["logger"] == "kopf.objects"
    assert (line["kind"], line["name"], line["message"]) == ("Node", "n7", "handler failed")
    assert "settings" not in line and "k8s_ref" not in line


def test_text_format_is_the_classic_line(captured: Callable[[str], io.StringIO]) -> None:
    stream = captured("text")
    logging.getLogger("pitstop.test").info("hello", extra={"node": "n1"})
    assert stream.getvalue().rstrip().endswith("INFO pitstop.test: hello")


@pytest.mark.parametrize("given", ["debug", "Info", "WARNING", " error "])
def test_brain_log_level_in_any_case(given: str) -> None:
    settings = load_settings(["--log-level", given], {})
    assert settings.log_level == given.strip().upper()
    assert load_settings([], {"PITSTOP_LOG_LEVEL": given}).log_level == given.strip().upper()


def test_brain_log_format_flag_and_environment() -> None:
    assert load_settings([], {}).log_format == "text"
    assert load_settings(["--log-format", "JSON"], {}).log_format == "json"
    assert load_settings([], {"PITSTOP_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(SettingsError, match="--log-format"):
        load_settings(["--log-format", "logfmt"], {})
    with pytest.raises(SettingsError, match="--log-level"):
        load_settings(["--log-level", "verbose"], {})


class _Kube:
    """Takes the Events (their bodies are not the subject here)."""

    async def create(self, path: str, body: Any) -> Any:
        return body


def test_warning_events_are_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    recorder = EventRecorder(_Kube(), host="test")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="pitstop.events"):
        asyncio.run(
            recorder.post(node_reference("node-09"), "DrainAborted", "refused", kind="Warning")
        )
        asyncio.run(recorder.post(window_reference("nights"), "WindowOpened", "open"))
    warning, normal = caplog.records
    assert (warning.levelname, getattr(warning, "node", None)) == ("WARNING", "node-09")
    assert (normal.levelname, getattr(normal, "window", None)) == ("INFO", "nights")
