"""`pitstop convert-kured`: turn a kured configuration into an equivalent NodesMaintenanceWindow.

Input: kured's flags, read from a DaemonSet manifest (container command/args and literal
`KURED_*` environment variables), from the kured Helm chart's values file (`configuration:`,
`extraArgs:`, `nodeSelector:`), or from a plain flag list. Output (stdout): a Secret holding
the notification URL translated from shoutrrr to apprise (when kured notified), then the
window. Every kured flag that has no equivalent in a window is listed in a YAML comment with
the reason, so nothing is dropped silently.

`convert()` is pure (flags in, manifests out); `main()` reads files and prints.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

from brain.core.api import API_VERSION, DEFAULT_NAMESPACE, KIND
from brain.core.window import MAX_DELAY_BETWEEN_NODES, MAX_DRAIN_TIMEOUT
from pitstop import contract

PENDING_TAINT = f"{contract.PENDING_TAINT_KEY}:{contract.PENDING_TAINT_EFFECT}"
# The brain's namespace in the install instructions (DEFAULT_NAMESPACE): the notify Secret
# must be in it.
# The URL key of the notify Secret (the window's `notify.secretRef.key` default).
SECRET_KEY = "urls"
# kured's flags that take a list: repeated flags accumulate, joined with a newline.
LIST_FLAGS = frozenset(
    {"blocking-pod-selector", "pre-reboot-node-labels", "post-reboot-node-labels"}
)
# kured's flags that take a comma-separated list (repeats are joined with a comma).
COMMA_FLAGS = frozenset({"reboot-days"})
BOOLEAN_FLAGS = frozenset(
    {
        "alert-filter-match-only",
        "alert-firing-only",
        "annotate-nodes",
        "force-reboot",
        "debug",
        "use-reboot-sentinel-host-path",
    }
)

# Chart values that are not kured flags (they shape the DaemonSet).
CHART_ONLY_VALUES = frozenset({"useRebootSentinelHostPath"})
# kured's defaults (1.1x and later): a flag at its default needs no field in the window.
KURED_DEFAULTS: Mapping[str, str] = {
    "alert-filter-match-only": "false",
    "alert-firing-only": "false",
    "annotate-nodes": "false",
    "concurrency": "1",
    "drain-delay": "0",
    "drain-grace-period": "-1",
    "drain-timeout": "0",
    "ds-name": "kured",
    "ds-namespace": "kube-system",
    "end-time": "23:59:59",
    "force-reboot": "false",
    "lock-annotation": "weave.works/kured-node-lock",
    "lock-release-delay": "0",
    "lock-ttl": "0",
    "log-format": "text",
    "message-template-drain": "Draining node %s",
    "message-template-reboot": "Rebooting node %s",
    "message-template-uncordon": "Node %s rebooted & uncordoned successfully!",
    "metrics-host": "",
    "metrics-port": "8080",
    "period": "1h0m0s",
    "prefer-no-schedule-taint": "",  # kured taints nothing unless this names a taint
    "reboot-command": "/bin/systemctl reboot",
    "reboot-days": "su,mo,tu,we,th,fr,sa",
    "reboot-delay": "0",
    "reboot-method": "command",
    "reboot-sentinel": "/var/run/reboot-required",
    "reboot-signal": "39",
    "skip-wait-for-delete-timeout": "0",
    "start-time": "0:00",
    "time-zone": "UTC",
}

_LOCK_IS_A_CONFIGMAP = (
    "the lock is a ConfigMap in the brain's namespace, not an annotation on kured's DaemonSet"
)
# Flags with no window equivalent, and why. Listed in the output when they are not at their
# default (and a few always, where the behaviour differs even at the default).
NO_EQUIVALENT: Mapping[str, str] = {
    "period": "the brain is event-driven: it sees a node's reboot-required label within seconds,"
    " there is no polling period",
    "lock-ttl": "the lock is released when the node is back; a node that never returns becomes"
    " Failed after reboot.nodeReturnTimeout and keeps its slot until a person acts"
    " (pitstop retry/release), it is never released by age",
    "lock-annotation": _LOCK_IS_A_CONFIGMAP,
    "ds-name": _LOCK_IS_A_CONFIGMAP,
    "ds-namespace": _LOCK_IS_A_CONFIGMAP,
    "reboot-sentinel": "a detector setting, not a window: set the detector's --sentinel-path"
    " (PITSTOP_SENTINEL_PATH)",
    "reboot-sentinel-command": "a detector setting: the detector only watches a sentinel file"
    " (--sentinel-path); have your command create that file instead",
    "use-reboot-sentinel-host-path": "a detector setting: the detector mounts the sentinel's"
    " folder",
    "drain-delay": "no equivalent: the drain starts as soon as a slot is free; a preDrain hook can"
    " hold a node back for as long as it answers non-2xx",
    "reboot-delay": "no equivalent: the reboot Job starts as soon as the drain is done",
    "skip-wait-for-delete-timeout": "no equivalent: a pod counts as gone when it is deleted or"
    " replaced (new UID), seen through a watch; pods stuck terminating are covered by"
    " drain.timeout and drain.onTimeout",
    "annotate-nodes": "a brain setting, not a window: start the brain with --kured-compatibility"
    " (PITSTOP_KURED_COMPATIBILITY=true) to keep kured's node annotations",
    "metrics-host": "a brain setting: the brain's metrics port is --metrics-port;"
    " kured_reboot_required{node} is kept",
    "metrics-port": "a brain setting: the brain's metrics port is --metrics-port;"
    " kured_reboot_required{node} is kept",
    "log-format": "a brain and detector setting: --log-format json (PITSTOP_LOG_FORMAT, chart"
    " values brain.logFormat and detector.logFormat)",
    "log-level": "a brain setting (--log-level)",
    "debug": "a brain setting (--log-level DEBUG)",
    "node-id": "set per node by the DaemonSet; the brain needs no node identity",
    "reboot-signal": "the Signal method always sends SIGRTMIN+5 (systemd's reboot signal); use"
    " reboot.jobTemplate for another procedure",
    "reboot-command": "the Command method reboots with systemctl through nsenter; put a custom"
    " command in reboot.jobTemplate (a pod template running your procedure)",
}

_DAYS = {
    "su": "Sun",
    "sun": "Sun",
    "sunday": "Sun",
    "mo": "Mon",
    "mon": "Mon",
    "monday": "Mon",
    "tu": "Tue",
    "tue": "Tue",
    "tuesday": "Tue",
    "we": "Wed",
    "wed": "Wed",
    "wednesday": "Wed",
    "th": "Thu",
    "thu": "Thu",
    "thursday": "Thu",
    "fr": "Fri",
    "fri": "Fri",
    "friday": "Fri",
    "sa": "Sat",
    "sat": "Sat",
    "saturday": "Sat",
}
WEEK = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TIME = re.compile(
    r"^\s*(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?(?::(?P<second>\d{2}))?\s*(?P<half>[ap]m)?\s*$",
    re.IGNORECASE,
)
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


class ConversionError(ValueError):
    """The input cannot be converted; the message says which flag or file and why."""


@dataclass
class ConversionResult:
    """The converted manifests and the notes (flags without an equivalent) for the comments."""

    window: dict[str, Any]
    secret: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_yaml(self) -> str:
        """The Secret (if any) and the window as one multi-document YAML, notes as comments."""
        documents = []
        if self.secret is not None:
            documents.append(
                "# The notification URL, translated from kured's shoutrrr URL to apprise.\n"
                + _dump(self.secret)
            )
        header = ["# Converted from kured by `pitstop convert-kured`."]
        if self.notes:
            header.append("# kured settings not carried over, and why:")
            for note in self.notes:
                header += _wrap_comment(note)
        documents.append("\n".join(header) + "\n" + _dump(self.window))
        return "---\n".join(documents)


class _Dumper(yaml.SafeDumper):
    """Plain YAML for people: no anchors, and times of day always quoted (22:00, 04:00)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "'" if re.fullmatch(r"[0-9:]+", value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_text)


def _dump(document: Mapping[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _wrap_comment(text: str, width: int = 98) -> list[str]:
    lines: list[str] = []
    current = "# - "
    for word in text.split():
        if len(current) + len(word) + 1 > width and current.strip() not in ("#", "# -"):
            lines.append(current.rstrip())
            current = "#   "
        current += word + " "
    lines.append(current.rstrip())
    return lines


# --- Reading kured's flags ----------------------------------------------------------------------


def _normalise_flag(name: str) -> str:
    return name.lstrip("-").strip().lower().replace("_", "-")


def _add_flag(flags: dict[str, str], name: str, value: str) -> None:
    if name in flags and name in LIST_FLAGS:
        flags[name] += "\n" + value
    elif name in flags and name in COMMA_FLAGS:
        flags[name] += "," + value
    else:
        flags[name] = value


def parse_flag_list(arguments: Sequence[str]) -> dict[str, str]:
    """Flags from a command line (`--name=value`, `--name value`, bare booleans).

    Arguments that are not flags (the program's path) are ignored. Repeated list flags
    (`--blocking-pod-selector`) are joined with newlines, repeated `--reboot-days` with commas.
    """
    flags: dict[str, str] = {}
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if not argument.startswith("-") or argument in ("-", "--"):
            continue
        if "=" in argument:
            name, value = argument.split("=", 1)
            _add_flag(flags, _normalise_flag(name), value)
            continue
        name = _normalise_flag(argument)
        has_value = index < len(arguments) and not arguments[index].startswith("--")
        if name in BOOLEAN_FLAGS and not (
            has_value and arguments[index].lower() in ("true", "false")
        ):
            _add_flag(flags, name, "true")
        elif has_value:
            _add_flag(flags, name, arguments[index])
            index += 1
        else:
            _add_flag(flags, name, "true")
    return flags


@dataclass
class KuredSource:
    """What was read: the flags, plus where kured ran (its DaemonSet's node selector, name)."""

    flags: dict[str, str]
    node_selector: dict[str, str] = field(default_factory=dict)
    name: str = "kured"
    notes: list[str] = field(default_factory=list)


def _camel_to_flag(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", key).lower()


def flags_from_helm_values(values: Mapping[str, Any]) -> KuredSource:
    """Flags the kured chart renders from its values (empty, false and 0 values render none)."""
    flags: dict[str, str] = {}
    configuration = values.get("configuration") or {}
    for key, value in configuration.items():
        name = _camel_to_flag(key)
        # The chart renders a flag only for a set value (`{{- if .Values.configuration.x }}`).
        if key in CHART_ONLY_VALUES or not value:
            continue
        if isinstance(value, list):
            if name in COMMA_FLAGS:
                flags[name] = ",".join(str(item) for item in value)
            else:
                for item in value:
                    _add_flag(flags, name, str(item))
        else:
            flags[name] = "true" if value is True else str(value)
    for key, value in (values.get("extraArgs") or {}).items():
        _add_flag(flags, _normalise_flag(str(key)), "true" if value is True else str(value))
    notes = []
    if values.get("affinity"):
        notes.append(
            "affinity: kured's DaemonSet affinity is not converted; express the nodes this window"
            " governs with spec.nodeSelector"
        )
    return KuredSource(
        flags=flags,
        node_selector={str(k): str(v) for k, v in (values.get("nodeSelector") or {}).items()},
        notes=notes,
    )


def flags_from_daemonset(daemonset: Mapping[str, Any]) -> KuredSource:
    """Flags of kured's container: command and args, then literal KURED_* environment values."""
    pod_spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    if not containers:
        raise ConversionError("the DaemonSet has no containers")
    container = next(
        (c for c in containers if "kured" in f"{c.get('name', '')} {c.get('image', '')}"),
        containers[0],
    )
    flags = parse_flag_list([*(container.get("command") or []), *(container.get("args") or [])])
    notes: list[str] = []
    for variable in container.get("env") or []:
        name = str(variable.get("name", ""))
        if not name.startswith("KURED_") or name == "KURED_NODE_ID":
            continue
        flag = _normalise_flag(name.removeprefix("KURED_"))
        if "value" in variable:
            flags.setdefault(flag, str(variable["value"]))
        else:
            notes.append(
                f"environment variable {name}: read from a Secret or ConfigMap, not converted;"
                " set the matching window field by hand"
            )
    if (pod_spec.get("affinity") or {}).get("nodeAffinity"):
        notes.append(
            "the DaemonSet's node affinity is not converted; express the nodes this window"
            " governs with spec.nodeSelector"
        )
    return KuredSource(
        flags=flags,
        node_selector={str(k): str(v) for k, v in (pod_spec.get("nodeSelector") or {}).items()},
        name=str((daemonset.get("metadata") or {}).get("name") or "kured"),
        notes=notes,
    )


def read_source(text: str) -> KuredSource:
    """A kured DaemonSet (also inside a List or a multi-document file) or Helm values."""
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    candidates: list[Any] = []
    for document in documents:
        if isinstance(document, dict) and document.get("kind") == "List":
            candidates += document.get("items") or []
        else:
            candidates.append(document)
    for document in candidates:
        if isinstance(document, dict) and document.get("kind") == "DaemonSet":
            return flags_from_daemonset(document)
    for document in candidates:
        if isinstance(document, dict) and "configuration" in document:
            return flags_from_helm_values(document)
    raise ConversionError(
        "found neither a DaemonSet nor Helm values with a `configuration:` key in the input"
    )


# --- Translating values ---------------------------------------------------------------------------


def parse_go_duration(text: str) -> float:
    """Seconds of a Go duration ("1h30m", "90s", "1.5h", "0"); kured's flags use Go's syntax."""
    value = text.strip()
    if value in ("0", ""):
        return 0.0
    if not re.fullmatch(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+", value):
        raise ConversionError(f"{text!r} is not a Go duration like 90s, 15m or 1h30m")
    return sum(float(amount) * _GO_UNITS[unit] for amount, unit in _GO_DURATION_PART.findall(value))


def format_duration(seconds: float) -> str:
    """The window API's duration text (whole h, m, s; at least 1s when not 0)."""
    whole = math.ceil(seconds)
    if whole <= 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        amount, whole = divmod(whole, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def parse_days(text: str) -> list[str]:
    """kured's --reboot-days (su,mo or sunday,monday) as the window's days, Monday first."""
    days: set[str] = set()
    for raw in re.split(r"[\s,]+", text.strip()):
        if not raw:
            continue
        day = _DAYS.get(raw.lower())
        if day is None:
            raise ConversionError(f"--reboot-days: {raw!r} is not a day (su, mo, ... or sunday)")
        days.add(day)
    return [day for day in WEEK if day in days] or list(WEEK)


def parse_time_of_day(text: str, flag: str) -> tuple[int, int, int]:
    """kured's time of day ("3:00", "23:59:59", "3pm", "3:04 pm") as (hour, minute, second)."""
    match = _TIME.match(text)
    if not match:
        raise ConversionError(f"--{flag}: {text!r} is not a time of day like 22:00 or 3pm")
    hour, minute = int(match["hour"]), int(match["minute"] or 0)
    second = int(match["second"] or 0)
    if match["half"]:
        if not 1 <= hour <= 12:
            raise ConversionError(f"--{flag}: {text!r} has an hour outside 1-12")
        hour = hour % 12 + (12 if match["half"].lower() == "pm" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ConversionError(f"--{flag}: {text!r} is not a valid time of day")
    return hour, minute, second


def _minutes(hour: int, minute: int, second: int, rounding_up: bool) -> int:
    """Whole minutes since midnight; seconds round up for an end time (23:59:59 is midnight)."""
    total = hour * 60 + minute
    if second and (rounding_up or second == 59):
        total += 1
    return total


def _hhmm(minutes: int) -> str:
    minutes %= 24 * 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def selector_from_text(text: str, flag: str) -> dict[str, Any]:
    """A label selector's text (`app=x,tier!=db,env in (a,b),!skip`) in structured form."""
    match_labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    # Split on commas outside parentheses.
    parts = [part.strip() for part in re.split(r",(?![^()]*\))", text) if part.strip()]
    for part in parts:
        if found := re.fullmatch(r"([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)", part):
            values = [value.strip() for value in found[3].split(",") if value.strip()]
            operator = "In" if found[2] == "in" else "NotIn"
            expressions.append({"key": found[1], "operator": operator, "values": values})
        elif found := re.fullmatch(r"([^\s!=]+)\s*!=\s*(\S*)", part):
            expressions.append({"key": found[1], "operator": "NotIn", "values": [found[2]]})
        elif found := re.fullmatch(r"([^\s!=]+)\s*==?\s*(\S*)", part):
            match_labels[found[1]] = found[2]
        elif found := re.fullmatch(r"!\s*([^\s!=]+)", part):
            expressions.append({"key": found[1], "operator": "DoesNotExist"})
        elif re.fullmatch(r"[^\s!=()]+", part):
            expressions.append({"key": part, "operator": "Exists"})
        else:
            raise ConversionError(f"--{flag}: cannot read the label selector part {part!r}")
    selector: dict[str, Any] = {}
    if match_labels:
        selector["matchLabels"] = match_labels
    if expressions:
        selector["matchExpressions"] = expressions
    return selector


# --- shoutrrr to apprise ------------------------------------------------------------------------


def _host(url: Any) -> str:
    """The host part as written: tokens sit there and are case-sensitive (urlsplit lowers it)."""
    host: str = url.netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


def _query(url: Any) -> dict[str, str]:
    return {key.lower(): values[-1] for key, values in parse_qs(url.query).items()}


def _slack(url: Any) -> str:
    query = _query(url)
    path = [unquote(part) for part in url.path.split("/") if part]
    botname = query.get("botname") or query.get("username") or ""
    if url.password and url.username in ("hook", "xoxb", "xoxp"):
        # New shoutrrr form: slack://hook:A-B-C@webhook or slack://xoxb:TOKEN@channel.
        if url.username == "hook":
            tokens = unquote(url.password).split("-")
            if len(tokens) != 3:
                raise ConversionError("a slack hook token must have three parts")
            base = "/".join(tokens)
            channel = query.get("channel", "")
        else:
            base = f"{url.username}-{unquote(url.password)}"
            channel = query.get("channel") or (_host(url) or "")
    else:
        # Legacy form: slack://[botname@]tokenA/tokenB/tokenC[/channel].
        tokens = [_host(url) or "", *path]
        if len(tokens) < 3:
            raise ConversionError("a slack URL needs three tokens")
        base = "/".join(tokens[:3])
        botname = botname or unquote(url.username or "")
        channel = query.get("channel") or (tokens[3] if len(tokens) > 3 else "")
    target = f"/{quote(channel if channel.startswith(('#', '@')) else '#' + channel, safe='')}"
    return (
        f"slack://{quote(botname, safe='') + '@' if botname else ''}{base}"
        f"{target if channel else ''}"
    )


def _discord(url: Any) -> str:
    # shoutrrr: discord://token@webhookid
    if not url.username or not _host(url):
        raise ConversionError("a discord URL is discord://token@webhookid")
    return f"discord://{_host(url)}/{unquote(url.username)}"


def _telegram(url: Any) -> str:
    # shoutrrr: telegram://token@telegram?chats=@channel,12345
    token = unquote(f"{url.username}:{url.password}" if url.password else url.username or "")
    chats = [chat for chat in _query(url).get("chats", "").split(",") if chat]
    if not token or not chats:
        raise ConversionError("a telegram URL is telegram://token@telegram?chats=...")
    return "tgram://" + token + "/" + "/".join(quote(chat, safe="@") for chat in chats)


def _smtp(url: Any) -> str:
    # shoutrrr: smtp://user:pass@host:port/?from=a@b&to=c@d,e@f&encryption=ExplicitTLS
    query = _query(url)
    encryption = query.get("encryption", "auto").lower()
    use_tls = query.get("usestarttls", "yes").lower() not in ("no", "false")
    schema = "mailto" if encryption == "none" or not use_tls else "mailtos"
    credentials = ""
    if url.username:
        credentials = quote(unquote(url.username), safe="")
        if url.password:
            credentials += ":" + quote(unquote(url.password), safe="")
        credentials += "@"
    port = f":{url.port}" if url.port else ""
    params = {"smtp": _host(url) or ""}
    if "from" in query:
        params["from"] = query["from"]
    if "to" in query:
        params["to"] = query["to"]
    if encryption == "implicittls":
        params["mode"] = "ssl"
    elif encryption == "explicittls":
        params["mode"] = "starttls"
    text = "&".join(f"{key}={quote(value, safe='@,')}" for key, value in params.items())
    return f"{schema}://{credentials}{_host(url)}{port}?{text}"


def _generic(url: Any, scheme: str) -> str:
    # shoutrrr: generic://host/path (https unless disabletls=yes), generic+http(s)://...
    query = _query(url)
    secure = not scheme.endswith("+http") and query.get("disabletls", "no").lower() not in (
        "yes",
        "true",
    )
    kept = "&".join(
        f"{key}={value}"
        for key, value in parse_qs(url.query).items()
        if key.lower()
        not in ("disabletls", "template", "contenttype", "title", "messagekey", "titlekey")
        for value in value[-1:]
    )
    netloc = url.netloc
    return f"{'jsons' if secure else 'json'}://{netloc}{url.path}{'?' + kept if kept else ''}"


def _gotify(url: Any) -> str:
    secure = _query(url).get("disabletls", "no").lower() not in ("yes", "true")
    return f"{'gotifys' if secure else 'gotify'}://{url.netloc}{url.path}"


def _pushover(url: Any) -> str:
    # shoutrrr: pushover://shoutrrr:apiToken@userKey/?devices=a,b
    devices = [device for device in _query(url).get("devices", "").split(",") if device]
    if not url.password or not _host(url):
        raise ConversionError("a pushover URL is pushover://shoutrrr:token@userKey")
    suffix = "".join(f"/{device}" for device in devices)
    return f"pover://{_host(url)}@{unquote(url.password)}{suffix}"


def _mattermost(url: Any) -> str:
    # shoutrrr: mattermost://[user@]host[:port][/path]/token[/channel]
    user = f"{url.username}@" if url.username else ""
    host = _host(url) + (f":{url.port}" if url.port else "")
    parts = [part for part in url.path.split("/") if part]
    if not parts:
        raise ConversionError("a mattermost URL needs a token")
    channel = _query(url).get("channel")
    path = "/".join(parts)
    return f"mmosts://{user}{host}/{path}" + (f"?channel={channel}" if channel else "")


def _ntfy(url: Any) -> str:
    secure = _query(url).get("scheme", "https").lower() != "http"
    return f"{'ntfys' if secure else 'ntfy'}://{url.netloc}{url.path}"


def _google_chat(url: Any) -> str:
    # shoutrrr: googlechat://chat.googleapis.com/v1/spaces/SPACE/messages?key=K&token=T
    query = _query(url)
    parts = [part for part in url.path.split("/") if part]
    if "spaces" not in parts or "key" not in query or "token" not in query:
        raise ConversionError("a googlechat URL needs /v1/spaces/SPACE/messages?key=..&token=..")
    space = parts[parts.index("spaces") + 1]
    return f"gchat://{space}/{query['key']}/{query['token']}"


_SHOUTRRR: Mapping[str, Any] = {
    "slack": _slack,
    "discord": _discord,
    "telegram": _telegram,
    "smtp": _smtp,
    "gotify": _gotify,
    "pushover": _pushover,
    "mattermost": _mattermost,
    "ntfy": _ntfy,
    "googlechat": _google_chat,
}
_NO_MAPPING: Mapping[str, str] = {
    "teams": "Microsoft retired the Office 365 connector webhooks that shoutrrr's teams:// uses;"
    " create a Workflows (Power Automate) webhook and use apprise's workflows:// URL",
    "rocketchat": "write apprise's rocket:// or rockets:// URL by hand (webhook@host form)",
    "zulip": "write apprise's zulip://botname@organization/token URL by hand",
    "matrix": "write apprise's matrix:// or matrixs:// URL by hand",
}


def shoutrrr_to_apprise(shoutrrr_url: str) -> str:
    """The apprise URL for a shoutrrr URL; ConversionError (naming the service) when none."""
    scheme = shoutrrr_url.split("://", 1)[0].lower() if "://" in shoutrrr_url else ""
    url = urlsplit(shoutrrr_url)
    service = scheme.split("+", 1)[0]
    if service == "generic":
        return _generic(url, scheme)
    if service in ("http", "https"):
        return _generic(url, "generic+" + scheme)
    if service in _SHOUTRRR:
        converted: str = _SHOUTRRR[service](url)
        return converted
    why = _NO_MAPPING.get(service, "no apprise mapping is known; write the apprise URL by hand")
    raise ConversionError(f"shoutrrr service {service or '(none)'!r}: {why}")


def _slack_webhook(hook_url: str, channel: str, username: str) -> str:
    """kured's legacy --slack-hook-url (https://hooks.slack.com/services/A/B/C) for apprise."""
    parts = [part for part in urlsplit(hook_url).path.split("/") if part]
    if len(parts) < 4 or parts[0] != "services":
        raise ConversionError("--slack-hook-url is not a https://hooks.slack.com/services/... URL")
    user = f"{quote(username, safe='')}@" if username else ""
    target = f"/{quote('#' + channel.lstrip('#'), safe='')}" if channel else ""
    return f"slack://{user}{'/'.join(parts[1:4])}{target}"


# --- The conversion -------------------------------------------------------------------------------


def _flag(flags: Mapping[str, str], name: str) -> str:
    return flags.get(name, KURED_DEFAULTS.get(name, ""))


def _is_true(value: str) -> bool:
    return value.strip().lower() in ("true", "1", "yes", "t")


def _schedule(flags: Mapping[str, str], spec: dict[str, Any], notes: list[str]) -> None:
    days = parse_days(_flag(flags, "reboot-days"))
    start = _minutes(*parse_time_of_day(_flag(flags, "start-time"), "start-time"), False)
    end = _minutes(*parse_time_of_day(_flag(flags, "end-time"), "end-time"), True)
    zone = _flag(flags, "time-zone") or "UTC"
    if zone == "Local":
        notes.append(
            "--time-zone=Local: each kured pod used its node's local zone; a window has one"
            " zone, UTC is used here: set schedule.timeZone to your nodes' zone"
        )
        zone = "UTC"
    schedule: dict[str, Any] = {"timeZone": zone}
    all_days = len(days) == 7
    if start == end:
        # kured opens from start up to (excluding) end on the same day: never.
        notes.append(
            "--start-time equals --end-time: kured never rebooted; the window is suspended"
            " (spec.suspend) until you set a schedule"
        )
        spec["suspend"] = True
        schedule["windows"] = [{"days": days, "start": _hhmm(start), "end": _hhmm(start + 1)}]
    elif start == 0 and end == 24 * 60:
        if not all_days:
            # A whole listed day: end == start lasts 24 hours from the day's 00:00.
            schedule["windows"] = [{"days": days, "start": "00:00", "end": "00:00"}]
    elif start < end or all_days:
        schedule["windows"] = [{"days": days, "start": _hhmm(start), "end": _hhmm(end)}]
    else:
        # kured checks the day of the current moment: on a listed day it is open from 00:00 to
        # end and from start to midnight. A window crossing midnight belongs to the day it starts
        # on, so the two parts are written out.
        schedule["windows"] = [
            {"days": days, "start": "00:00", "end": _hhmm(end)},
            {"days": days, "start": _hhmm(start), "end": "00:00"},
        ]
        notes.append(
            "the kured window crosses midnight on some days only: kured opened on each listed day"
            " from 00:00 to --end-time and from --start-time to midnight, written as two windows"
        )
    spec["schedule"] = schedule


def _duration_at_most(
    flags: Mapping[str, str], name: str, maximum: timedelta, field: str, notes: list[str]
) -> float:
    """Kured's duration flag `--name`, in seconds, within the window field's range (the API
    server refuses more)."""
    seconds = parse_go_duration(_flag(flags, name))
    limit = maximum.total_seconds()
    flag = f"--{name}"
    if seconds <= limit:
        return seconds
    notes.append(
        f"{flag}={format_duration(seconds)} is longer than a window's {field} may be:"
        f" written as its maximum, {format_duration(limit)}"
    )
    return limit


def _drain(flags: Mapping[str, str], spec: dict[str, Any], notes: list[str]) -> None:
    # kured drains like `kubectl drain --force --delete-emptydir-data --ignore-daemonsets`.
    drain: dict[str, Any] = {"force": True, "deleteEmptyDirData": True}
    timeout = _duration_at_most(flags, "drain-timeout", MAX_DRAIN_TIMEOUT, "drain.timeout", notes)
    if timeout > 0:
        drain["timeout"] = format_duration(timeout)
    else:
        notes.append(
            "--drain-timeout=0 (kured waited forever for a drain): a window's drain.timeout"
            " defaults to 10m; raise it if your pods take longer"
        )
    grace = int(_flag(flags, "drain-grace-period") or "-1")
    if grace >= 0:
        drain["gracePeriodSeconds"] = min(grace, 86_400)
    if selector := flags.get("drain-pod-selector", "").strip():
        drain["podSelector"] = selector_from_text(selector, "drain-pod-selector")
    if _is_true(_flag(flags, "force-reboot")):
        drain["onTimeout"] = "Force"
    spec["drain"] = drain


def _blockers(flags: Mapping[str, str], spec: dict[str, Any], notes: list[str]) -> None:
    blockers: dict[str, Any] = {}
    if url := flags.get("prometheus-url", "").strip():
        prometheus: dict[str, Any] = {"url": url}
        if alert_filter := flags.get("alert-filter-regexp", ""):
            prometheus["alertFilter"] = alert_filter
        prometheus["filterMatchOnly"] = _is_true(_flag(flags, "alert-filter-match-only"))
        prometheus["firingOnly"] = _is_true(_flag(flags, "alert-firing-only"))
        blockers["prometheus"] = prometheus
    selectors = [s.strip() for s in flags.get("blocking-pod-selector", "").split("\n") if s.strip()]
    if selectors:
        # kured only looks at the pods on the node about to reboot: scope Node.
        blockers["pods"] = [
            {
                "labelSelector": selector_from_text(selector, "blocking-pod-selector"),
                "scope": "Node",
            }
            for selector in selectors
        ]
    if blockers:
        spec["blockers"] = blockers


def _reboot(flags: Mapping[str, str], spec: dict[str, Any], notes: list[str]) -> None:
    reboot: dict[str, Any] = {}
    method = _flag(flags, "reboot-method").strip().lower()
    command = _flag(flags, "reboot-command").strip()
    if method == "signal":
        reboot["method"] = "Signal"
    elif method == "command" and command == KURED_DEFAULTS["reboot-command"]:
        reboot["method"] = "DBus"
        notes.append(
            "--reboot-method=command with the default `/bin/systemctl reboot`: DBus does the same"
            " (logind's reboot) without a privileged container"
        )
    elif method == "command":
        reboot["method"] = "Command"
    else:
        raise ConversionError(f"--reboot-method: {method!r} is neither command nor signal")
    delay = _duration_at_most(
        flags, "lock-release-delay", MAX_DELAY_BETWEEN_NODES, "reboot.delayBetweenNodes", notes
    )
    if delay > 0:
        reboot["delayBetweenNodes"] = format_duration(delay)
    _node_labels(flags, reboot, notes)
    taint = flags.get("prefer-no-schedule-taint", "").strip()
    if taint:
        reboot["pendingTaint"] = {"key": taint, "effect": "PreferNoSchedule"}
    else:
        reboot["pendingTaint"] = {"enabled": False}
        notes.append(
            "--prefer-no-schedule-taint (unset: kured tainted nothing): reboot.pendingTaint is"
            f" off; delete it to have Pitstop taint waiting nodes with {PENDING_TAINT}, so new"
            " pods prefer other nodes"
        )
    spec["reboot"] = reboot


def _labels(flags: Mapping[str, str], flag: str) -> dict[str, str]:
    """kured's `key=value` list (repeated flags or a comma list) as a label map."""
    labels: dict[str, str] = {}
    for item in re.split(r"[\n,]", flags.get(flag, "")):
        if not item.strip():
            continue
        key, separator, value = item.strip().partition("=")
        if not separator or not key:
            raise ConversionError(f"--{flag}: {item!r} is not key=value")
        labels[key] = value
    return labels


def _node_labels(flags: Mapping[str, str], reboot: dict[str, Any], notes: list[str]) -> None:
    before = _labels(flags, "pre-reboot-node-labels")
    after = _labels(flags, "post-reboot-node-labels")
    if before or after:
        reboot["nodeLabels"] = {
            side: labels for side, labels in (("before", before), ("after", after)) if labels
        }
    if kept := sorted(set(before) - set(after)):
        notes.append(
            f"--pre-reboot-node-labels {', '.join(kept)}: kured left these on the node after the"
            " reboot; Pitstop removes its before labels when it sets the after labels (add the"
            " key to reboot.nodeLabels.after to keep it)"
        )


# kured's message templates (%s is the node name).
MESSAGE_TEMPLATES = (
    "message-template-drain",
    "message-template-reboot",
    "message-template-uncordon",
)


def _message_template(flags: Mapping[str, str], notes: list[str]) -> str | None:
    """A window has one body template for all its events ($event tells them apart): the one
    kured template set, with %s as $node (the uncordon one when several are set)."""
    changed = [flag for flag in MESSAGE_TEMPLATES if _flag(flags, flag) != KURED_DEFAULTS[flag]]
    if not changed:
        return None
    chosen = "message-template-uncordon" if len(changed) > 1 else changed[0]
    if len(changed) > 1:
        notes.append(
            f"--{', --'.join(changed)}: a window has one notify.body template for every event"
            " ($event names it); the uncordon message was used"
        )
    return _flag(flags, chosen).replace("$", "$$").replace("%s", "$node")


def _notify(
    flags: Mapping[str, str], spec: dict[str, Any], notes: list[str], name: str, namespace: str
) -> dict[str, Any] | None:
    notify_url = flags.get("notify-url", "").strip()
    hook_url = flags.get("slack-hook-url", "").strip()
    try:
        if notify_url:
            apprise_url = shoutrrr_to_apprise(notify_url)
        elif hook_url:
            apprise_url = _slack_webhook(
                hook_url, flags.get("slack-channel", ""), flags.get("slack-username", "")
            )
        else:
            return None
    except ConversionError as error:
        notes.append(f"--notify-url not converted: {error}")
        return None
    secret_name = f"{name}-notify"
    spec["notify"] = {
        "secretRef": {"name": secret_name, "key": SECRET_KEY},
        # kured told when a node started draining and when it was back.
        "events": ["Started", "Succeeded"],
    }
    if body := _message_template(flags, notes):
        spec["notify"]["body"] = body
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": namespace},
        "type": "Opaque",
        "stringData": {SECRET_KEY: apprise_url},
    }


HANDLED = frozenset(
    {
        "reboot-days",
        "start-time",
        "end-time",
        "time-zone",
        "concurrency",
        "drain-timeout",
        "drain-grace-period",
        "drain-pod-selector",
        "force-reboot",
        "prometheus-url",
        "alert-filter-regexp",
        "alert-filter-match-only",
        "alert-firing-only",
        "blocking-pod-selector",
        "reboot-method",
        "lock-release-delay",
        "notify-url",
        "slack-hook-url",
        "slack-channel",
        "slack-username",
        "prefer-no-schedule-taint",
        "pre-reboot-node-labels",
        "post-reboot-node-labels",
        "message-template-drain",
        "message-template-reboot",
        "message-template-uncordon",
    }
)


def convert(
    flags: dict[str, str],
    name: str = "kured",
    node_selector: Mapping[str, str] | None = None,
    namespace: str = DEFAULT_NAMESPACE,
) -> ConversionResult:
    """The window (and notify Secret) equivalent to kured's `flags` (names without dashes).

    `name` names the window (and the Secret `<name>-notify`); `node_selector` is the label
    selector of the nodes kured ran on (its DaemonSet's nodeSelector); `namespace` is the
    brain's namespace, where the notify Secret lives.
    """
    normalised = {_normalise_flag(key): str(value) for key, value in flags.items()}
    notes: list[str] = []
    spec: dict[str, Any] = {
        "nodeSelector": {"matchLabels": dict(node_selector)} if node_selector else {}
    }
    _schedule(normalised, spec, notes)
    concurrency = int(_flag(normalised, "concurrency") or "1")
    spec["maxUnavailable"] = max(1, concurrency)
    _drain(normalised, spec, notes)
    _blockers(normalised, spec, notes)
    _reboot(normalised, spec, notes)
    secret = _notify(normalised, spec, notes, name, namespace)
    for flag, value in sorted(normalised.items()):
        if flag in HANDLED:
            continue
        why = NO_EQUIVALENT.get(flag)
        if why is None:
            notes.append(f"--{flag}: not a kured flag this converter knows; not converted")
        elif value != KURED_DEFAULTS.get(flag):
            shown = "(set)" if "url" in flag else value
            notes.append(f"--{flag}={shown}: {why}")
    # These two shape how kured behaves even at their defaults: always say what replaces them.
    for flag in ("period", "lock-ttl"):
        if normalised.get(flag, KURED_DEFAULTS[flag]) == KURED_DEFAULTS[flag]:
            notes.append(f"--{flag}: {NO_EQUIVALENT[flag]}")
    if "notify" not in spec and any(flag in normalised for flag in MESSAGE_TEMPLATES):
        notes.append("--message-template-*: no notification URL, so no notify.body was written")
    window = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": spec,
    }
    return ConversionResult(window=window, secret=secret, notes=notes)


def main(argv: list[str]) -> int:
    """`pitstop convert-kured [FILE | -- FLAGS...]`: print the window; 0 on success, 2 on error."""
    parser = argparse.ArgumentParser(
        prog="pitstop convert-kured",
        description=(
            "Print a NodesMaintenanceWindow (and a Secret for notifications) equivalent to a"
            " kured configuration: a DaemonSet manifest, kured Helm values, or kured's flags"
            " after `--`. Flags without an equivalent are listed in comments."
        ),
    )
    parser.add_argument("file", nargs="?", help="DaemonSet manifest or Helm values ('-': stdin)")
    parser.add_argument("--name", help="window name (default: the DaemonSet's name or kured)")
    parser.add_argument(
        "--namespace",
        default=DEFAULT_NAMESPACE,
        help=f"the brain's namespace, where the notify Secret goes (default {DEFAULT_NAMESPACE},"
        " the chart's install namespace in docs/install.md)",
    )
    parser.epilog = "Example: pitstop convert-kured -- --reboot-days=sa,su --start-time=2:00"
    # Everything after `--` is kured's, not ours.
    split = argv.index("--") if "--" in argv else len(argv)
    arguments = parser.parse_args(argv[:split])
    kured_flags = argv[split + 1 :]
    try:
        if arguments.file and not kured_flags:
            text = (
                sys.stdin.read()
                if arguments.file == "-"
                else Path(arguments.file).read_text(encoding="utf-8")
            )
            source = read_source(text)
        elif kured_flags and not arguments.file:
            source = KuredSource(flags=parse_flag_list(kured_flags))
        else:
            print(
                "pitstop convert-kured: give either a FILE or kured's flags after --",
                file=sys.stderr,
            )
            return 2
        result = convert(
            source.flags,
            name=arguments.name or source.name,
            node_selector=source.node_selector,
            namespace=arguments.namespace,
        )
    except (ConversionError, OSError, yaml.YAMLError, ValueError) as error:
        print(f"pitstop convert-kured: {error}", file=sys.stderr)
        return 2
    result.notes[:0] = source.notes
    sys.stdout.write(result.to_yaml())
    return 0
