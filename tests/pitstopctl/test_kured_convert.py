"""convert-kured: kured's chart defaults, realistic flag sets, DaemonSets and shoutrrr URLs."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import apprise
import pytest
import yaml

from brain.core.window import parse_window_spec
from pitstop import contract
from pitstopctl.kured_convert import (
    KURED_DEFAULTS,
    NO_EQUIVALENT,
    ConversionError,
    _minutes,
    convert,
    flags_from_daemonset,
    main,
    parse_days,
    parse_flag_list,
    parse_time_of_day,
    read_source,
    selector_from_text,
    shoutrrr_to_apprise,
)

# The kured Helm chart's values.yaml (chart 5.x, kured 1.1x-1.2x), the parts the converter reads.
CHART_DEFAULTS = """
image:
  repository: ghcr.io/kubereboot/kured
  tag: ""
  pullPolicy: IfNotPresent
updateStrategy: RollingUpdate
maxUnavailable: 1
extraArgs: {}
extraEnvVars:
configuration:
  lockTtl: 0
  lockReleaseDelay: 0
  alertFilterRegexp: ""
  alertFiringOnly: false
  alertFilterMatchOnly: false
  blockingPodSelector: []
  endTime: ""
  lockAnnotation: ""
  period: ""
  forceReboot: false
  drainGracePeriod: ""
  drainPodSelector: ""
  drainTimeout: ""
  drainDelay: ""
  skipWaitForDeleteTimeout: ""
  prometheusUrl: ""
  rebootDays: []
  rebootSentinel: ""
  rebootSentinelCommand: ""
  rebootCommand: ""
  rebootMethod: ""
  rebootSignal: ""
  rebootDelay: ""
  slackChannel: ""
  slackHookUrl: ""
  slackUsername: ""
  notifyUrl: ""
  messageTemplateDrain: ""
  messageTemplateReboot: ""
  messageTemplateUncordon: ""
  startTime: ""
  timeZone: ""
  annotateNodes: false
  logFormat: "text"
  preferNoScheduleTaint: ""
  preRebootNodeLabels: []
  postRebootNodeLabels: []
  concurrency: 0
  useRebootSentinelHostPath: true
  metricsHost: ""
  metricsPort: 8080
rbac:
  create: true
containerSecurityContext:
  privileged: true
hostNetwork: true
tolerations: []
affinity: {}
nodeSelector:
  kubernetes.io/os: linux
"""

# kured's own kured-ds.yaml, trimmed, with a team's flags uncommented.
DAEMONSET = """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kured
  namespace: kube-system
spec:
  selector:
    matchLabels: {name: kured}
  template:
    metadata:
      labels: {name: kured}
    spec:
      serviceAccountName: kured
      hostPID: true
      nodeSelector:
        node-role.kubernetes.io/worker: ""
      containers:
        - name: kured
          image: ghcr.io/kubereboot/kured:1.17.1
          securityContext: {privileged: true}
          env:
            - name: KURED_NODE_ID
              valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
            - name: KURED_LOCK_TTL
              value: 30m
            - name: KURED_NOTIFY_URL
              valueFrom: {secretKeyRef: {name: kured-notify, key: url}}
          command:
            - /usr/bin/kured
            - --reboot-days=sat,sun
            - --start-time=2am
            - --end-time=6am
            - --time-zone=America/New_York
            - --period=1h
            - --drain-timeout=15m
            - --drain-grace-period=30
            - --skip-wait-for-delete-timeout=60
            - --reboot-sentinel=/sentinel/reboot-required
            - --blocking-pod-selector=app=etcd-backup
            - --blocking-pod-selector=job-name
"""


def window_of(flags: dict[str, str], **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = convert(flags, **options).window["spec"]
    return spec


def test_chart_defaults() -> None:
    source = read_source(CHART_DEFAULTS)
    # The chart renders only --metrics-port at its defaults (and our own chart-only value is out).
    assert source.flags == {"log-format": "text", "metrics-port": "8080"}
    result = convert(source.flags, node_selector=source.node_selector)
    spec = result.window["spec"]
    assert result.window["apiVersion"] == "pitstop.dev/v1alpha1"
    assert result.window["kind"] == "NodesMaintenanceWindow"
    assert spec["nodeSelector"] == {"matchLabels": {"kubernetes.io/os": "linux"}}
    # Every day, all day: always open.
    assert spec["schedule"] == {"timeZone": "UTC"}
    assert spec["maxUnavailable"] == 1
    assert spec["drain"] == {"force": True, "deleteEmptyDirData": True}
    # kured tainted nothing unless told: the pending taint is off too.
    assert spec["reboot"] == {"method": "DBus", "pendingTaint": {"enabled": False}}
    assert "blockers" not in spec and "notify" not in spec
    assert result.secret is None
    notes = "\n".join(result.notes)
    for flag in ("--drain-timeout=0", "--period:", "--lock-ttl:", "--reboot-method=command"):
        assert flag in notes
    assert "metrics-port" not in notes and "log-format" not in notes


def test_weeknight_window_with_prometheus_and_slack() -> None:
    flags = parse_flag_list(
        [
            "/usr/bin/kured",
            "--reboot-days=mo,tu,we,th,fr",
            "--start-time=22:00",
            "--end-time=23:59:59",
            "--time-zone=Europe/Berlin",
            "--concurrency=3",
            "--prometheus-url=http://prometheus.monitoring.svc:9090",
            "--alert-filter-regexp=^(Watchdog|RebootRequired)$",
            "--alert-firing-only",
            "--notify-url=slack://hook:T0001-B0002-XXXXXXXXXXXXXXXXXXXXXXXX@webhook?channel=ops",
            "--force-reboot",
            "--drain-timeout=1h30m",
            "--lock-release-delay=90s",
        ]
    )
    result = convert(flags, name="weeknights", namespace="pitstop-system")
    spec = result.window["spec"]
    assert result.window["metadata"] == {"name": "weeknights"}
    assert spec["schedule"] == {
        "timeZone": "Europe/Berlin",
        "windows": [
            {"days": ["Mon", "Tue", "Wed", "Thu", "Fri"], "start": "22:00", "end": "00:00"}
        ],
    }
    assert spec["maxUnavailable"] == 3
    assert spec["blockers"] == {
        "prometheus": {
            "url": "http://prometheus.monitoring.svc:9090",
            "alertFilter": "^(Watchdog|RebootRequired)$",
            "filterMatchOnly": False,
            "firingOnly": True,
        }
    }
    assert spec["drain"]["timeout"] == "1h30m" and spec["drain"]["onTimeout"] == "Force"
    assert spec["reboot"] == {
        "method": "DBus",
        "delayBetweenNodes": "1m30s",
        "pendingTaint": {"enabled": False},
    }
    assert spec["notify"] == {
        "secretRef": {"name": "weeknights-notify", "key": "urls"},
        "events": ["Started", "Succeeded"],
    }
    assert result.secret == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "weeknights-notify", "namespace": "pitstop-system"},
        "type": "Opaque",
        "stringData": {"urls": "slack://T0001/B0002/XXXXXXXXXXXXXXXXXXXXXXXX/%23ops"},
    }
    # The token is in the Secret, never in a comment.
    assert "XXXXXXXX" not in "\n".join(result.notes)


def test_daemonset_with_env_and_repeated_selectors() -> None:
    source = read_source(DAEMONSET)
    assert source.name == "kured"
    assert source.node_selector == {"node-role.kubernetes.io/worker": ""}
    assert source.flags["blocking-pod-selector"] == "app=etcd-backup\njob-name"
    assert source.flags["lock-ttl"] == "30m"  # from a literal KURED_ environment variable
    result = convert(source.flags, node_selector=source.node_selector)
    spec = result.window["spec"]
    assert spec["schedule"] == {
        "timeZone": "America/New_York",
        "windows": [{"days": ["Sat", "Sun"], "start": "02:00", "end": "06:00"}],
    }
    assert spec["drain"]["timeout"] == "15m" and spec["drain"]["gracePeriodSeconds"] == 30
    # kured's pod selector holds only the node the pod runs on: scope Node.
    assert spec["blockers"]["pods"] == [
        {"labelSelector": {"matchLabels": {"app": "etcd-backup"}}, "scope": "Node"},
        {
            "labelSelector": {"matchExpressions": [{"key": "job-name", "operator": "Exists"}]},
            "scope": "Node",
        },
    ]
    notes = "\n".join([*source.notes, *result.notes])
    assert "KURED_NOTIFY_URL: read from a Secret" in notes
    assert "--skip-wait-for-delete-timeout=60" in notes
    assert "--reboot-sentinel=/sentinel/reboot-required: a detector setting" in notes
    assert "--lock-ttl=30m" in notes and "--period=1h:" in notes


def test_helm_values_with_settings_and_extra_args() -> None:
    values = yaml.safe_load(CHART_DEFAULTS)
    values["configuration"].update(
        {
            "rebootDays": ["sa", "su"],
            "startTime": "1:00",
            "endTime": "5:00",
            "blockingPodSelector": ["app=backup", "tier in (db,cache)"],
            "drainPodSelector": "app!=critical",
            "rebootMethod": "signal",
            "slackHookUrl": "https://hooks.slack.com/services/T1/B2/abcdefghijklmnopqrstuvwx",
            "slackChannel": "#alerts",
            "slackUsername": "kured",
            "messageTemplateDrain": "Draining %s now",
            "annotateNodes": True,
        }
    )
    values["extraArgs"] = {"concurrency": 2, "reboot-delay": "1m"}
    source = read_source(yaml.safe_dump(values))
    result = convert(source.flags, node_selector=source.node_selector)
    spec = result.window["spec"]
    assert spec["schedule"]["windows"] == [
        {"days": ["Sat", "Sun"], "start": "01:00", "end": "05:00"}
    ]
    assert spec["maxUnavailable"] == 2
    assert spec["reboot"]["method"] == "Signal"
    assert spec["drain"]["podSelector"] == {
        "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["critical"]}]
    }
    assert spec["blockers"]["pods"][1] == {
        "labelSelector": {
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["db", "cache"]}]
        },
        "scope": "Node",
    }
    assert result.secret is not None
    assert result.secret["stringData"]["urls"] == (
        "slack://kured@T1/B2/abcdefghijklmnopqrstuvwx/%23alerts"
    )
    notes = "\n".join(result.notes)
    # The one message template set becomes the window's notification body.
    assert spec["notify"]["body"] == "Draining $node now"
    assert "--annotate-nodes=true: a brain setting" in notes and "--kured-compatibility" in notes
    assert "--reboot-delay=1m: no equivalent" in notes


def kured_open(days: set[int], start: int, end: int, minute_of_week: int) -> bool:
    """kured's TimeWindow.Contains, minute by minute (day 0 = Monday)."""
    day, minute = divmod(minute_of_week, 1440)
    if day not in days:
        return False
    if end < start:
        return minute < end or minute >= start
    return start <= minute < end


def window_open(windows: list[dict[str, Any]], minute_of_week: int) -> bool:
    """Pitstop's rule: a window belongs to the day it starts on; end <= start runs past midnight."""
    names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    for window in windows:
        start_hour, start_minute = map(int, window["start"].split(":"))
        end_hour, end_minute = map(int, window["end"].split(":"))
        start, end = start_hour * 60 + start_minute, end_hour * 60 + end_minute
        length = end - start if end > start else end - start + 1440
        for day in window["days"]:
            opened = names.index(day) * 1440 + start
            if (minute_of_week - opened) % (7 * 1440) < length:
                return True
    return False


@pytest.mark.parametrize(
    ("days", "start", "end"),
    [
        ("fr", "22:00", "02:00"),
        ("mo,we,fr,su", "11pm", "3:30am"),
        ("su,mo,tu,we,th,fr,sa", "23:00", "4:00"),
        ("sa,su", "0:00", "23:59:59"),
        ("tu", "9:15", "17:45"),
        ("sunday,saturday", "12am", "12pm"),
    ],
)
def test_schedules_open_exactly_when_kured_did(days: str, start: str, end: str) -> None:
    flags = {"reboot-days": days, "start-time": start, "end-time": end}
    schedule = window_of(flags)["schedule"]
    converted = parse_flag_list([f"--reboot-days={days}"])
    day_numbers = {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].index(d)
        for d in parse_days(converted["reboot-days"])
    }
    start_minute = _minutes(*parse_time_of_day(start, "start-time"), False)
    end_minute = _minutes(*parse_time_of_day(end, "end-time"), True)
    windows = schedule.get("windows")
    for minute in range(7 * 1440):
        expected = kured_open(day_numbers, start_minute, end_minute % 1440 or 1440, minute)
        actual = True if windows is None else window_open(windows, minute)
        assert actual == expected, f"minute {minute} of the week ({days} {start}-{end})"


def test_time_parsing() -> None:
    spec = window_of({"start-time": "3pm", "end-time": "11:30 PM", "reboot-days": "mo"})
    assert spec["schedule"]["windows"] == [{"days": ["Mon"], "start": "15:00", "end": "23:30"}]
    with pytest.raises(ConversionError, match="start-time"):
        convert({"start-time": "25:00"})
    with pytest.raises(ConversionError, match="reboot-days"):
        convert({"reboot-days": "funday"})


SHOUTRRR = [
    ("slack://T1AB/B2CD/abcdefghijklmnopqrstuvwx", "slack://T1AB/B2CD/abcdefghijklmnopqrstuvwx"),
    (
        "slack://kured@T1AB/B2CD/abcdefghijklmnopqrstuvwx/general",
        "slack://kured@T1AB/B2CD/abcdefghijklmnopqrstuvwx/%23general",
    ),
    ("discord://tokenABCDEF@123456789012345678", "discord://123456789012345678/tokenABCDEF"),
    (
        "telegram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw@telegram?chats=@kured,-1001234",
        "tgram://110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/@kured/-1001234",
    ),
    (
        "smtp://alerts:p%40ss@smtp.example.com:587/?from=kured@example.com&to=ops@example.com"
        "&encryption=ExplicitTLS",
        "mailtos://alerts:p%40ss@smtp.example.com:587?smtp=smtp.example.com"
        "&from=kured@example.com&to=ops@example.com&mode=starttls",
    ),
    ("generic://hooks.example.com/kured/notify", "jsons://hooks.example.com/kured/notify"),
    (
        "generic+http://10.0.0.5:8080/notify?disabletls=yes",
        "json://10.0.0.5:8080/notify",
    ),
    ("gotify://gotify.example.com/AbCdEfGhIjKlMnO", "gotifys://gotify.example.com/AbCdEfGhIjKlMnO"),
    (
        "pushover://shoutrrr:azGDORePK8gMaC0QOYAMyEEuzJnyUi@uQiRzpo4DXghDmr9QzzfQu27cmVRsG/",
        "pover://uQiRzpo4DXghDmr9QzzfQu27cmVRsG@azGDORePK8gMaC0QOYAMyEEuzJnyUi",
    ),
    (
        "mattermost://kured@chat.example.com/abcdefghijklmnopqrstuvwxyz",
        "mmosts://kured@chat.example.com/abcdefghijklmnopqrstuvwxyz",
    ),
    ("ntfy://ntfy.sh/kured-reboots", "ntfys://ntfy.sh/kured-reboots"),
    (
        "googlechat://chat.googleapis.com/v1/spaces/AAAAxyz/messages?key=KEY123&token=TOKEN456",
        "gchat://AAAAxyz/KEY123/TOKEN456",
    ),
]


@pytest.mark.parametrize(("shoutrrr", "expected"), SHOUTRRR)
def test_shoutrrr_urls_become_apprise_urls_apprise_accepts(shoutrrr: str, expected: str) -> None:
    converted = shoutrrr_to_apprise(shoutrrr)
    assert converted == expected
    assert apprise.Apprise.instantiate(converted) is not None, converted


def test_unmapped_shoutrrr_service_is_a_comment_without_the_token() -> None:
    result = convert(
        {"notify-url": "teams://group@tenant/altId/secretOwner?host=x.webhook.office.com"}
    )
    assert result.secret is None and "notify" not in result.window["spec"]
    notes = "\n".join(result.notes)
    assert "shoutrrr service 'teams'" in notes and "workflows://" in notes
    assert "secretOwner" not in notes


def test_selector_text_forms() -> None:
    assert selector_from_text("a=1,b==2,c!=3,d,!e,f in (x, y),g notin (z)", "x") == {
        "matchLabels": {"a": "1", "b": "2"},
        "matchExpressions": [
            {"key": "c", "operator": "NotIn", "values": ["3"]},
            {"key": "d", "operator": "Exists"},
            {"key": "e", "operator": "DoesNotExist"},
            {"key": "f", "operator": "In", "values": ["x", "y"]},
            {"key": "g", "operator": "NotIn", "values": ["z"]},
        ],
    }


def test_unknown_flags_and_bare_booleans() -> None:
    flags = parse_flag_list(["--alert-firing-only", "--concurrency", "2", "--frobnicate=yes"])
    assert flags == {"alert-firing-only": "true", "concurrency": "2", "frobnicate": "yes"}
    result = convert(flags)
    assert "--frobnicate: not a kured flag this converter knows" in "\n".join(result.notes)


def test_daemonset_without_containers_is_an_error() -> None:
    with pytest.raises(ConversionError, match="no containers"):
        flags_from_daemonset({"kind": "DaemonSet", "spec": {"template": {"spec": {}}}})


def test_main_prints_comments_then_manifests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "kured-ds.yaml"
    manifest.write_text(textwrap.dedent(DAEMONSET), encoding="utf-8")
    assert main([str(manifest), "--name", "workers"]) == 0
    output = capsys.readouterr().out
    documents = list(yaml.safe_load_all(output))
    assert [document["kind"] for document in documents] == ["NodesMaintenanceWindow"]
    assert documents[0]["metadata"]["name"] == "workers"
    assert "# - --period=1h: the brain is event-driven" in output
    # Times of day are quoted, so no YAML 1.1 reader takes them for numbers.
    assert "start: '02:00'" in output

    assert main(["--", "--notify-url=ntfy://ntfy.sh/reboots", "--reboot-days=sa"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [document["kind"] for document in documents] == ["Secret", "NodesMaintenanceWindow"]

    assert main(["--", "--start-time=noon"]) == 2
    assert "start-time" in capsys.readouterr().err
    assert main([]) == 2


def test_the_notify_secret_goes_to_the_brains_namespace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Default: pitstop-system, where docs/install.md installs the brain; --namespace moves it."""
    flags = {"notify-url": "ntfy://ntfy.sh/reboots"}
    secret = convert(flags).secret
    assert secret is not None and secret["metadata"]["namespace"] == "pitstop-system"
    assert main(["--", "--notify-url=ntfy://ntfy.sh/reboots"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents[0]["metadata"]["namespace"] == "pitstop-system"
    assert main(["--namespace", "ops", "--", "--notify-url=ntfy://ntfy.sh/reboots"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    assert documents[0]["metadata"]["namespace"] == "ops"
    install = (Path(__file__).resolve().parents[2] / "docs" / "install.md").read_text()
    assert "--namespace pitstop-system" in install


def test_notes_name_only_real_annotations() -> None:
    """Every pitstop.dev/ name in a note is one of the node contract's."""
    every_flag = {flag: "x" for flag in NO_EQUIVALENT}
    notes = "\n".join(convert(every_flag).notes + convert({}).notes)
    named = set(re.findall(r"pitstop\.dev/[a-z-]+", notes))
    real = {value for value in vars(contract).values() if isinstance(value, str)}
    assert named, "the notes name no annotation at all"
    assert named <= real, f"not in pitstop/contract.py: {named - real}"
    assert "pitstop.dev/phase" not in notes


def test_prefer_no_schedule_taint_becomes_the_pending_taint_given_or_not() -> None:
    """kured's default is empty (no taint): the pending taint is off; a taint given is kept."""
    assert KURED_DEFAULTS["prefer-no-schedule-taint"] == ""
    given = convert({"prefer-no-schedule-taint": "weave.works/kured-node-reboot"})
    assert given.window["spec"]["reboot"]["pendingTaint"] == {
        "key": "weave.works/kured-node-reboot",
        "effect": "PreferNoSchedule",
    }
    assert "prefer-no-schedule-taint" not in "\n".join(given.notes)
    unset = convert({})
    assert unset.window["spec"]["reboot"]["pendingTaint"] == {"enabled": False}
    notes = "\n".join(unset.notes)
    assert "--prefer-no-schedule-taint (unset: kured tainted nothing)" in notes
    assert "pitstop.dev/reboot-pending:PreferNoSchedule" in notes


def test_durations_beyond_a_windows_range_are_written_as_its_maximum() -> None:
    flags = parse_flag_list(
        ["/usr/bin/kured", "--drain-timeout=48h", "--lock-release-delay=10000h"]
    )
    result = convert(flags, name="long", namespace="pitstop-system")
    spec = result.window["spec"]
    assert spec["drain"]["timeout"] == "24h"
    assert spec["reboot"]["delayBetweenNodes"] == "168h"
    notes = "\n".join(result.notes)
    assert "--drain-timeout=48h is longer than a window's drain.timeout" in notes
    assert "--lock-release-delay=10000h is longer" in notes and "168h" in notes
    parse_window_spec(spec, "long")  # the API's ranges hold
