"""Window specs fed to both pydantic (tests/brain/test_window.py) and the real API server
(tests/integration/test_window_crd.py): each is accepted by both or rejected by both, and a
rejection message contains the same words on both sides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brain import window as api


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
            "topology": {"maxUnavailable": 1},
            "countUnhealthy": False,
        },
    ),
    Example(
        "maxUnavailable 100%", {"maxUnavailable": "100%", "topology": {"maxUnavailable": "1%"}}
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

INVALID = [
    Example("150%", {"maxUnavailable": "150%"}, api.MESSAGE_INT_OR_PERCENT),
    Example("negative maxUnavailable", {"maxUnavailable": -1}, api.MESSAGE_INT_OR_PERCENT),
    Example("zero maxUnavailable", {"maxUnavailable": 0}, api.MESSAGE_INT_OR_PERCENT),
    Example("0%", {"maxUnavailable": "0%"}, api.MESSAGE_INT_OR_PERCENT),
    Example("number as a string", {"maxUnavailable": "3"}, api.MESSAGE_INT_OR_PERCENT),
    Example("topology 150%", {"topology": {"maxUnavailable": "150%"}}, api.MESSAGE_INT_OR_PERCENT),
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
    Example(
        "zero node return timeout",
        {"reboot": {"nodeReturnTimeout": "0s"}},
        api.MESSAGE_POSITIVE_DURATION,
    ),
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

# Well-formed but not in the tz database: both sides know the same list (brain/time_zones.py).
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
