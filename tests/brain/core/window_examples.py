"""Window specs fed to both pydantic (tests/brain/test_window.py) and the real API server
(tests/integration/test_window_crd.py): each is accepted by both or rejected by both, and a
rejection message contains the same words on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brain.core import window as api


@dataclass(frozen=True)
class Example:
    name: str
    spec: dict[str, Any]
    # None: valid. Otherwise words found in both rejections (lowercased comparison), or a pair
    # (words in the API server's message, words in pydantic's) when their phrasing differs.
    error: str | tuple[str, str] | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def api_words(self) -> str:
        return self.error[0] if isinstance(self.error, tuple) else self.error or ""

    @property
    def pydantic_words(self) -> str:
        return self.error[1] if isinstance(self.error, tuple) else self.error or ""


# The range messages of the bounded durations.
UP_TO_24H = api.duration_range_message(api.MAX_NODE_RETURN_TIMEOUT, positive=True)
UP_TO_10M = api.duration_range_message(api.MAX_HOOK_TIMEOUT, positive=True)
UP_TO_7D = api.duration_range_message(api.MAX_DELAY_BETWEEN_NODES, positive=False)
assert api.MAX_DRAIN_TIMEOUT == api.MAX_HEALTH_GATE_TIMEOUT == api.MAX_NODE_RETURN_TIMEOUT


def one_off(start: str, end: str | None = None) -> dict[str, Any]:
    span = {"start": start} if end is None else {"start": start, "end": end}
    return {"schedule": {"oneOff": [span]}}


VALID = [
    Example("empty spec: every node, always open, one at a time", {}),
    Example(
        "weekend nights in Berlin",
        {
            "schedule": {
                "timeZone": "Europe/Berlin",
                "windows": [
                    {"days": ["Fri", "Sat"], "start": "22:00", "end": "05:00"},
                    {"start": "00:00", "end": "00:00"},
                ],
            },
        },
    ),
    Example(
        "10% per zone with a pool selector",
        {
            "nodeSelector": {
                "matchLabels": {"pool": "general"},
                "matchExpressions": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"},
                    {"key": "zone", "operator": "In", "values": ["a", "b"]},
                ],
            },
            "maxUnavailable": "10%",
            "topology": {"key": "topology.kubernetes.io/zone", "maxUnavailable": 1},
            "countUnhealthy": False,
        },
    ),
    Example(
        "maxUnavailable 100%",
        {"maxUnavailable": "100%", "topology": {"key": "zone", "maxUnavailable": "1%"}},
    ),
    Example(
        "one-off and blackouts with offsets and fractions",
        {
            "priority": 100,
            "schedule": {
                "timeZone": "America/Argentina/Buenos_Aires",
                "oneOff": [{"start": "2025-12-24T22:00:00+05:30", "end": "2025-12-25T02:00:00Z"}],
                "blackouts": [
                    {"start": "2025-12-20T00:00:00.5Z", "end": "2026-01-05T00:00:00-08:00"}
                ],
            },
        },
    ),
    Example(
        "every field",
        {
            "nodeSelector": {"matchLabels": {"pool": "gpu"}},
            "priority": 5,
            "schedule": {"timeZone": "Etc/GMT+3"},
            "maxUnavailable": 2,
            "topology": {"key": "rack", "maxUnavailable": "50%"},
            "drain": {
                "enabled": True,
                "timeout": "1h30m",
                "gracePeriodSeconds": 0,
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
                "deleteEmptyDirData": True,
                "force": True,
                "onTimeout": "Force",
            },
            "blockers": {
                "prometheus": {
                    "url": "http://prometheus.monitoring:9090",
                    "alertFilter": "^(Watchdog|InfoInhibitor)$",
                    "filterMatchOnly": False,
                    "firingOnly": True,
                },
                "pods": [
                    {
                        "namespaceSelector": {"matchLabels": {"team": "db"}},
                        "labelSelector": {"matchLabels": {"app": "backup"}},
                    }
                ],
                "nodeAnnotations": ["example.com/do-not-reboot"],
            },
            "reboot": {
                "method": "HostAgent",
                "jobTemplate": {"spec": {"containers": [{"name": "r", "image": "busybox"}]}},
                "nodeReturnTimeout": "20m",
                "delayBetweenNodes": "0s",
                "healthGate": {"podsReady": False, "timeout": "90s"},
            },
            "hooks": {
                "preDrain": {"url": "https://hooks.example.com/pre", "timeout": "5s", "retries": 0},
                "postReboot": {"url": "http://hooks.example.com/post"},
            },
            "notify": {"secretRef": {"name": "apprise"}, "events": ["Started", "Failed"]},
            "emergency": {"drain": "Skip"},
            "suspend": True,
        },
    ),
]

VALID += [
    Example(
        "every duration at its maximum",
        {
            "drain": {"timeout": "24h"},
            "reboot": {
                "nodeReturnTimeout": "1440m",
                "delayBetweenNodes": "168h",
                "healthGate": {"timeout": "86400s"},
            },
            "hooks": {
                "preDrain": {"url": "http://x", "timeout": "10m"},
                "postReboot": {"url": "http://x", "timeout": "600000ms"},
            },
        },
    ),
    Example(
        "durations with leading zeros and many parts",
        {"drain": {"timeout": "0000000000000001h59m59s999ms"}},
    ),
    Example(
        "a job template using more of the pod template",
        {
            "reboot": {
                "jobTemplate": {
                    "metadata": {"labels": {"team": "ops"}, "annotations": {"a": "b"}},
                    "spec": {
                        "initContainers": [{"name": "prepare", "image": "busybox:1.36"}],
                        "containers": [
                            {"name": "reboot-1", "image": "busybox", "command": ["reboot"]}
                        ],
                        "tolerations": [{"key": "gpu", "operator": "Exists"}],
                        "automountServiceAccountToken": True,
                        "hostPID": True,
                    },
                }
            }
        },
    ),
]


def job_template(**spec: Any) -> dict[str, Any]:
    return {"reboot": {"jobTemplate": {"spec": spec}}}


BUSYBOX = {"name": "reboot", "image": "busybox"}

INVALID = [
    Example("150%", {"maxUnavailable": "150%"}, api.MESSAGE_INT_OR_PERCENT),
    Example("negative maxUnavailable", {"maxUnavailable": -1}, api.MESSAGE_INT_OR_PERCENT),
    Example("zero maxUnavailable", {"maxUnavailable": 0}, api.MESSAGE_INT_OR_PERCENT),
    Example("0%", {"maxUnavailable": "0%"}, api.MESSAGE_INT_OR_PERCENT),
    Example("number as a string", {"maxUnavailable": "3"}, api.MESSAGE_INT_OR_PERCENT),
    Example(
        "topology 150%",
        {"topology": {"key": "zone", "maxUnavailable": "150%"}},
        api.MESSAGE_INT_OR_PERCENT,
    ),
    Example("negative priority", {"priority": -1}, "greater than or equal to 0"),
    Example("priority as a string", {"priority": "5"}, "integer"),
    Example(
        "negative grace period", {"drain": {"gracePeriodSeconds": -5}}, "greater than or equal to 0"
    ),
    Example(
        "negative hook retries",
        {"hooks": {"preDrain": {"url": "http://x", "retries": -1}}},
        "greater than or equal to 0",
    ),
    Example(
        "time zone with a space",
        {"schedule": {"timeZone": "Europe Berlin"}},
        api.MESSAGE_TIME_ZONE_SHAPE,
    ),
    Example(
        "one-off ending before it starts",
        one_off("2025-01-02T00:00:00Z", "2025-01-01T00:00:00Z"),
        api.MESSAGE_END_AFTER_START,
    ),
    Example(
        "blackout ending when it starts",
        {
            "schedule": {
                "blackouts": [{"start": "2025-01-02T10:00:00+02:00", "end": "2025-01-02T08:00:00Z"}]
            }
        },
        api.MESSAGE_END_AFTER_START,
    ),
    Example("one-off start without end", one_off("2025-01-02T00:00:00Z"), "required"),
    Example(
        "one-off without an offset",
        one_off("2025-01-02T00:00:00", "2025-01-03T00:00:00Z"),
        api.MESSAGE_TIMESTAMP,
    ),
    Example(
        "one-off in month 13",
        one_off("2025-13-02T00:00:00Z", "2025-12-03T00:00:00Z"),
        api.MESSAGE_TIMESTAMP,
    ),
    Example(
        "window starting at 25:00",
        {"schedule": {"windows": [{"start": "25:00", "end": "03:00"}]}},
        api.MESSAGE_TIME_OF_DAY,
    ),
    Example(
        "window ending at 7:00",
        {"schedule": {"windows": [{"start": "22:00", "end": "7:00"}]}},
        api.MESSAGE_TIME_OF_DAY,
    ),
    Example(
        "window without an end",
        {"schedule": {"windows": [{"start": "22:00"}]}},
        "required",
    ),
    Example(
        "repeated day",
        {"schedule": {"windows": [{"days": ["Mon", "Mon"], "start": "22:00", "end": "03:00"}]}},
        api.MESSAGE_DAYS_UNIQUE,
    ),
    Example(
        "day spelled out",
        {"schedule": {"windows": [{"days": ["Monday"], "start": "22:00", "end": "03:00"}]}},
        "sun",
    ),
    Example("unknown method", {"reboot": {"method": "Kexec"}}, "hostagent"),
    Example("zero node return timeout", {"reboot": {"nodeReturnTimeout": "0s"}}, UP_TO_24H),
    Example(
        "duration in words", {"reboot": {"delayBetweenNodes": "5 minutes"}}, api.MESSAGE_DURATION
    ),
    Example("fractional duration", {"drain": {"timeout": "1.5h"}}, api.MESSAGE_DURATION),
    Example("unknown onTimeout", {"drain": {"onTimeout": "Ignore"}}, "abort"),
    Example(
        "In without values",
        {"nodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In"}]}},
        api.MESSAGE_SELECTOR_VALUES,
    ),
    Example(
        "Exists with values",
        {
            "nodeSelector": {
                "matchExpressions": [{"key": "pool", "operator": "Exists", "values": ["a"]}]
            }
        },
        api.MESSAGE_SELECTOR_VALUES,
    ),
    Example("unknown field", {"maxUnavaliable": 2}, ("unknown field", "extra inputs")),
    Example("boolean as a string", {"countUnhealthy": "yes"}, "boolean"),
    Example("ftp prometheus", {"blockers": {"prometheus": {"url": "ftp://x"}}}, api.MESSAGE_URL),
    Example("notify without secretRef", {"notify": {"events": ["Done"]}}, "required"),
    Example("unknown emergency drain", {"emergency": {"drain": "Never"}}, "skip"),
]

# Found by an independent tester (issue 16): each was accepted, or refused with CEL's bare "type
# conversion error", and the brain then failed on every pass with a node already drained.
INVALID += [
    Example("topology without key", {"topology": {"maxUnavailable": 1}}, "required"),
    Example("empty topology", {"topology": {}}, "required"),
    Example("huge delayBetweenNodes", {"reboot": {"delayBetweenNodes": "70000000h"}}, UP_TO_7D),
    Example(
        "delayBetweenNodes 7 days and 1ms", {"reboot": {"delayBetweenNodes": "168h1ms"}}, UP_TO_7D
    ),
    Example(
        "delayBetweenNodes of 32 digits",
        {"reboot": {"delayBetweenNodes": "9999999999999999999999999999999s"}},
        UP_TO_7D,
    ),
    Example("huge nodeReturnTimeout", {"reboot": {"nodeReturnTimeout": "80000000h"}}, UP_TO_24H),
    Example(
        "nodeReturnTimeout 24h and 1ms", {"reboot": {"nodeReturnTimeout": "24h1ms"}}, UP_TO_24H
    ),
    Example("drain timeout 24h and 1s", {"drain": {"timeout": "24h0m1s"}}, UP_TO_24H),
    Example(
        "drain timeout beyond a timedelta",
        {"drain": {"timeout": "99999999999999999999h"}},
        UP_TO_24H,
    ),
    Example(
        "drain timeout over many parts",
        {"drain": {"timeout": "99999h99999h99999h99999h99999h"}},
        UP_TO_24H,
    ),
    Example(
        "health gate timeout 24h and 1ms",
        {"reboot": {"healthGate": {"timeout": "86400001ms"}}},
        UP_TO_24H,
    ),
    Example(
        "preDrain hook timeout 10m and 1ms",
        {"hooks": {"preDrain": {"url": "http://x", "timeout": "10m1ms"}}},
        UP_TO_10M,
    ),
    Example(
        "postReboot hook timeout 11m",
        {"hooks": {"postReboot": {"url": "http://x", "timeout": "11m"}}},
        UP_TO_10M,
    ),
    Example(
        "job template whose containers is not a list",
        job_template(containers={"name": "reboot", "image": "busybox"}),
        # kubectl's strict decoding refuses it first: 'unknown field "...containers.image"'.
        (
            "spec.reboot.jobTemplate.spec.containers",
            "spec.containers: input should be a valid list",
        ),
    ),
    Example(
        "job template without spec",
        {"reboot": {"jobTemplate": {"metadata": {"labels": {"a": "b"}}}}},
        "required",
    ),
    Example("job template without containers", job_template(hostPID=True), "required"),
    Example(
        "job template with no container",
        job_template(containers=[]),
        ("should have at least 1 items", "should have at least 1 item"),
    ),
    Example(
        "job template container without an image",
        job_template(containers=[{"name": "reboot"}]),
        "required",
    ),
    Example(
        "job template container with an empty image",
        job_template(containers=[{"name": "reboot", "image": ""}]),
        "at least 1 ",
    ),
    Example(
        "job template container named in capitals",
        job_template(containers=[{"name": "Reboot", "image": "busybox"}]),
        "should match",
    ),
    Example(
        "job template container that is not an object",
        job_template(containers=["busybox"]),
        ("must be of type object", "valid dictionary"),
    ),
    Example(
        "job template init container without a name",
        job_template(containers=[BUSYBOX], initContainers=[{"image": "busybox"}]),
        "required",
    ),
    Example(
        "job template tolerations not a list",
        job_template(containers=[BUSYBOX], tolerations={"operator": "Exists"}),
        (
            "spec.reboot.jobTemplate.spec.tolerations",
            "spec.tolerations: input should be a valid list",
        ),
    ),
    Example(
        "job template token as a string",
        job_template(containers=[BUSYBOX], automountServiceAccountToken="yes"),
        ("must be of type boolean", "valid boolean"),
    ),
    Example(
        "job template label that is not a string",
        {
            "reboot": {
                "jobTemplate": {"metadata": {"labels": {"a": 1}}, "spec": {"containers": [BUSYBOX]}}
            }
        },
        ("must be of type string", "valid string"),
    ),
]

# Well-formed but not in the tz database: both sides know the same list (brain/core/time_zones.py).
UNKNOWN_TIME_ZONE = Example(
    "well-formed but unknown time zone",
    {"schedule": {"timeZone": "Mars/Olympus_Mons"}},
    "known iana time zone",
)
INVALID.append(UNKNOWN_TIME_ZONE)

# kured parity (issue 21): pod blocker scope.
VALID += [
    Example(
        "pod blockers per node and per window",
        {
            "blockers": {
                "pods": [
                    {"labelSelector": {"matchLabels": {"app": "backup"}}, "scope": "Node"},
                    {"labelSelector": {"matchLabels": {"app": "migration"}}, "scope": "Window"},
                ]
            }
        },
    ),
]
# kured parity: node labels before/after, the pending taint.
VALID += [
    Example(
        "node labels before and after, a chosen NoSchedule taint",
        {
            "reboot": {
                "nodeLabels": {
                    "before": {"example.com/maintenance": "rebooting", "plain": ""},
                    "after": {"example.com/maintenance": "done"},
                },
                "pendingTaint": {"key": "example.com/reboot-soon", "effect": "NoSchedule"},
            }
        },
    ),
    Example("pending taint switched off", {"reboot": {"pendingTaint": {"enabled": False}}}),
]
# kured parity: monthly schedules.
VALID += [
    Example(
        "patch Tuesday nights, the last Sunday, the 15th and the last day",
        {
            "schedule": {
                "timeZone": "America/New_York",
                "windows": [
                    {"monthly": [{"weekday": "Tue", "nth": 2}], "start": "22:00", "end": "04:00"},
                    {"monthly": [{"weekday": "Sun", "nth": -1}], "start": "01:00", "end": "05:00"},
                    {
                        "days": ["Mon", "Tue", "Wed", "Thu", "Fri"],
                        "monthly": [{"dayOfMonth": 15}, {"dayOfMonth": -1}],
                        "start": "12:00",
                        "end": "13:00",
                    },
                ],
            }
        },
    ),
]
# kured parity: notification templates (the API server checks their length; the placeholders
# only pydantic: see tests/brain/test_notify_templates.py).
VALID += [
    Example(
        "notification templates",
        {
            "notify": {
                "secretRef": {"name": "apprise"},
                "title": "[$cluster] $event: $node",
                "body": "${window}: $node is $phase ($reason: $message), costs $$0",
            }
        },
    ),
]
INVALID += [
    Example(
        "a notification title of 5000 characters",
        {"notify": {"secretRef": {"name": "apprise"}, "title": "x" * 5000}},
        ("too long", "at most 4096"),
    ),
    Example(
        "a monthly weekday without nth",
        {
            "schedule": {
                "windows": [{"monthly": [{"weekday": "Tue"}], "start": "22:00", "end": "04:00"}]
            }
        },
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "a monthly rule with a weekday and a day of month",
        {
            "schedule": {
                "windows": [
                    {
                        "monthly": [{"weekday": "Tue", "nth": 1, "dayOfMonth": 3}],
                        "start": "22:00",
                        "end": "04:00",
                    }
                ]
            }
        },
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "a sixth Tuesday",
        {
            "schedule": {
                "windows": [
                    {"monthly": [{"weekday": "Tue", "nth": 6}], "start": "22:00", "end": "04:00"}
                ]
            }
        },
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "nth zero",
        {
            "schedule": {
                "windows": [
                    {"monthly": [{"weekday": "Tue", "nth": 0}], "start": "22:00", "end": "04:00"}
                ]
            }
        },
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "day 32",
        {
            "schedule": {
                "windows": [{"monthly": [{"dayOfMonth": 32}], "start": "22:00", "end": "04:00"}]
            }
        },
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "an empty monthly rule",
        {"schedule": {"windows": [{"monthly": [{}], "start": "22:00", "end": "04:00"}]}},
        api.MESSAGE_MONTHLY_RULE,
    ),
    Example(
        "a node label in pitstop.dev/",
        {"reboot": {"nodeLabels": {"before": {"pitstop.dev/reboot-required": "false"}}}},
        api.MESSAGE_LABEL_KEYS,
    ),
    Example(
        "a node label key with a space",
        {"reboot": {"nodeLabels": {"after": {"my label": "x"}}}},
        api.MESSAGE_LABEL_KEYS,
    ),
    Example(
        "a node label value with a slash",
        {"reboot": {"nodeLabels": {"after": {"example.com/state": "a/b"}}}},
        api.MESSAGE_LABEL_VALUES,
    ),
    Example(
        "a taint key with a colon",
        {"reboot": {"pendingTaint": {"key": "example.com/a:b"}}},
        api.MESSAGE_TAINT_KEY,
    ),
    Example(
        "a NoExecute pending taint",
        {"reboot": {"pendingTaint": {"effect": "NoExecute"}}},
        "noschedule",
    ),
    Example(
        "unknown pod blocker scope",
        {"blockers": {"pods": [{"labelSelector": {}, "scope": "Zone"}]}},
        "window",
    ),
]

ALL = VALID + INVALID


# --- Status examples: what the brain writes, accepted (or refused) alike by pydantic's
# WindowStatus (tests/brain/core/test_window.py) and by the API server's status subresource
# (tests/integration/test_window_crd.py). status.nodes is bounded (api.MAX_STATUS_NODES), so
# the window object stays far below etcd's object limit at any scale.


def node_entries(count: int, message: str = "batch 1") -> list[dict[str, Any]]:
    return [
        {
            "name": f"node-{index:05d}",
            "phase": "Pending",
            "since": "2025-06-01T00:00:00Z",
            "message": message,
        }
        for index in range(count)
    ]


FULL_STATUS: dict[str, Any] = {
    "observedGeneration": 3,
    "conditions": [
        {
            "type": "Progressing",
            "status": "True",
            "reason": "Rebooting",
            "message": "1 in maintenance (a), 4999 pending",
            "lastTransitionTime": "2025-06-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ],
    "nextWindowStart": "2025-06-07T22:00:00Z",
    "nextWindowEnd": "2025-06-08T04:00:00Z",
    "nodes": [
        {
            "name": "a",
            "phase": "Rebooting",
            "since": "2025-06-01T00:00:00Z",
            "message": "reboot Job created",
            "bootIDBefore": "5c1d0c4e-0000-4000-8000-000000000000",
        },
        {"name": "b", "phase": "Failed", "message": "did not come back"},
        {"name": "c", "phase": "Done", "since": "2025-05-31T23:00:00Z"},
    ],
    "nodesNotListed": 4979,
    "rolloutStart": "2025-06-01T00:00:00Z",
    "counts": {"governed": 5000, "pending": 4999, "inMaintenance": 2, "done": 250, "failed": 1},
}

STATUS_VALID = [
    Example("an empty status", {}),
    Example("every field", FULL_STATUS),
    Example("as many nodes as allowed", {"nodes": node_entries(api.MAX_STATUS_NODES)}),
    Example(
        "a node message as long as allowed",
        {"nodes": node_entries(1, "x" * api.MAX_NODE_MESSAGE_LENGTH)},
    ),
]

STATUS_INVALID = [
    Example(
        "one node more than allowed",
        {"nodes": node_entries(api.MAX_STATUS_NODES + 1)},
        f"at most {api.MAX_STATUS_NODES} items",
    ),
    Example(
        "a node message too long",
        {"nodes": node_entries(1, "x" * (api.MAX_NODE_MESSAGE_LENGTH + 1))},
        ("may not be", f"at most {api.MAX_NODE_MESSAGE_LENGTH} characters"),
    ),
    Example(
        "a node listed twice",
        {"nodes": node_entries(1) + node_entries(1)},
        ("duplicate value", "listed twice"),
    ),
    Example("a node without a name", {"nodes": [{"name": "", "phase": "Pending"}]}, "at least 1"),
    Example(
        "an unknown phase",
        {"nodes": [{"name": "a", "phase": "Sleeping"}]},
        ("unsupported value", "input should be"),
    ),
    Example(
        "a negative count of unlisted nodes", {"nodesNotListed": -1}, "greater than or equal to 0"
    ),
    Example("a negative done count", {"counts": {"done": -1}}, "greater than or equal to 0"),
    Example("a rollout start that is no time", {"rolloutStart": "yesterday"}, "date-time"),
    Example("an unknown field", {"nodesShown": 3}, ("unknown field", "extra inputs")),
]
