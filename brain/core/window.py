"""The NodesMaintenanceWindow API as pydantic models: what users write (spec) and read (status).

The CRD in `crds/pitstop.dev_nodesmaintenancewindows.yaml` describes the same API for the API
server. Both are kept by hand (pydantic's JSON Schema is not a valid structural CRD schema), so
every cross-field rule below mirrors a CEL rule of the CRD with the same message, and an
integration test feeds both the same valid and invalid examples and checks that they agree.

One rule is stricter here than in the CRD: the API server can only check the shape of
`schedule.timeZone`, while pydantic checks that the zone really exists (tzdata). The brain
reports a window that fails to parse as a condition instead of acting on it.

Field names are camelCase in the API and snake_case in Python (aliases, populate_by_name).
"""

from __future__ import annotations

import calendar
import math
import re
import string
import zoneinfo
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cached_property
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

from brain.core.api import GROUP, KIND
from brain.core.phase import Phase
from brain.core.selectors import Operator, Selector, selector_from_object
from brain.core.time_zones import KNOWN_TIME_ZONES, MESSAGE_UNKNOWN_TIME_ZONE

# The messages of the CEL rules in the CRD; pydantic raises the same text.
MESSAGE_END_AFTER_START: Final = "end must be after start"
MESSAGE_INT_OR_PERCENT: Final = (
    "must be a whole number of at least 1 or a percentage from 1% to 100%, like 2 or 10%"
)
MESSAGE_SELECTOR_VALUES: Final = (
    "values must be set for the operators In and NotIn and must be empty for Exists and"
    " DoesNotExist"
)
MESSAGE_DAYS_UNIQUE: Final = "days must not repeat a day"
MESSAGE_MONTHLY_RULE: Final = (
    "a monthly rule is either {weekday, nth} (nth 1 to 5, or -1 to -5 counting from the month's"
    " end) or {dayOfMonth} (1 to 31, or -1 to -31 counting from the month's end)"
)
MESSAGE_TIME_ZONE_SHAPE: Final = "timeZone must be an IANA time zone name like UTC or Europe/Berlin"
MESSAGE_TIME_OF_DAY: Final = "must be a time of day HH:MM between 00:00 and 23:59, like 22:00"
MESSAGE_TIMESTAMP: Final = (
    "must be an RFC 3339 date-time with seconds and a time zone offset, like 2025-12-24T22:00:00Z"
)
MESSAGE_DURATION: Final = "must be a duration made of whole h, m, s or ms, like 90s, 15m or 1h30m"
MESSAGE_URL: Final = "must be an http:// or https:// URL"
MESSAGE_LABEL_KEYS: Final = (
    "label keys must be qualified names like example.com/rebooting, outside pitstop.dev/"
)
MESSAGE_LABEL_VALUES: Final = (
    "label values must be at most 63 letters, digits, '-', '_' or '.', starting and ending"
    " with a letter or digit"
)
# Placeholders a notification template may use (string.Template: $name or ${name}).
TEMPLATE_PLACEHOLDERS: Final = ("cluster", "window", "node", "event", "phase", "reason", "message")
MESSAGE_TEMPLATE: Final = (
    "a template may use only $cluster, $window, $node, $event, $phase, $reason and $message"
    " ($$ for a dollar sign)"
)
MESSAGE_TAINT_KEY: Final = "must be a qualified name like example.com/reboot-pending"

# The same patterns are in the CRD (CEL `matches` uses RE2; these use no RE2/Python differences).
TIME_ZONE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
TIME_OF_DAY_PATTERN: Final = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
TIMESTAMP_PATTERN: Final = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]+)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
DURATION_PATTERN: Final = r"^([0-9]+(ms|h|m|s))+$"
MAX_DURATION_LENGTH: Final = 32  # the CRD's maxLength of every duration
# Durations CEL's duration() can convert without overflowing (it fails past ~2562047h with a
# bare "type conversion error"): few enough digits per part that 32 characters stay far below.
# Every value in range has this shape, so a range rule that also requires it says "at most ..."
# for a huge value instead of failing to convert it.
CONVERTIBLE_DURATION_PATTERN: Final = r"^(0*([0-9]{1,5}h|[0-9]{1,7}m|[0-9]{1,9}s|[0-9]{1,12}ms))+$"
PERCENT_PATTERN: Final = r"^(100|[1-9][0-9]?)%$"
URL_PATTERN: Final = r"^https?://[^ ]+$"
QUALIFIED_NAME_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN: Final = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
CONTAINER_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a DNS-1123 label

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: Final[tuple[Weekday, ...]] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_DURATION_PART = re.compile(r"([0-9]+)(ms|h|m|s)")
_DURATION_UNITS: Final = {
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
    "s": timedelta(seconds=1),
    "ms": timedelta(milliseconds=1),
}


# --- Scalar types: each parses the API's string form and serializes back to it. -------------


class DurationTooLongError(ValueError):
    """A well-formed duration beyond what a timedelta holds (about 2.7 million years)."""


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration ("1h30m", "90s", "0s") into a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(MESSAGE_DURATION)
    try:
        return sum(
            (_DURATION_UNITS[unit] * int(amount) for amount, unit in _DURATION_PART.findall(text)),
            timedelta(),
        )
    except OverflowError as error:
        raise DurationTooLongError(f"{MESSAGE_DURATION} (too long)") from error


def format_duration(value: timedelta) -> str:
    """The shortest Go-style text for a duration, the inverse of parse_duration."""
    milliseconds = round(value.total_seconds() * 1000)
    if milliseconds == 0:
        return "0s"
    parts: list[str] = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, milliseconds = divmod(milliseconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _validate_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(MESSAGE_DURATION)
    return parse_duration(value)


def duration_range_message(maximum: timedelta, positive: bool) -> str:
    """The message of a duration out of its range, the same in the CRD's CEL rule."""
    if positive:
        return f"must be longer than 0s and at most {format_duration(maximum)}"
    return f"must be from 0s to {format_duration(maximum)}"


def _duration_within(maximum: timedelta, positive: bool = True) -> PlainValidator:
    """Parse a duration limited to (0s or more, or more than 0s) .. maximum.

    Every duration has a maximum: the brain adds them to timestamps (a deadline, the next start
    after delayBetweenNodes), and a value of millions of hours would overflow there on every
    pass instead of being refused once, here.
    """
    message = duration_range_message(maximum, positive)

    def validate(value: object) -> timedelta:
        if isinstance(value, str) and len(value) > MAX_DURATION_LENGTH:
            raise ValueError(message)  # the CRD's maxLength, which its range rule repeats
        try:
            duration = _validate_duration(value)
        except DurationTooLongError as error:
            raise ValueError(message) from error
        if duration > maximum or (positive and duration <= timedelta()):
            raise ValueError(message)
        return duration

    return PlainValidator(validate)


_AS_DURATION_TEXT: Final = PlainSerializer(format_duration, return_type=str)

# The maxima, also in the CRD (rules and descriptions) and docs/architecture.md.
MAX_DRAIN_TIMEOUT: Final = timedelta(hours=24)  # as long as gracePeriodSeconds' 86400
MAX_NODE_RETURN_TIMEOUT: Final = timedelta(hours=24)
MAX_HEALTH_GATE_TIMEOUT: Final = timedelta(hours=24)
MAX_HOOK_TIMEOUT: Final = timedelta(minutes=10)  # one call; retries multiply it
MAX_DELAY_BETWEEN_NODES: Final = timedelta(days=7)

DrainTimeout = Annotated[timedelta, _duration_within(MAX_DRAIN_TIMEOUT), _AS_DURATION_TEXT]
NodeReturnTimeout = Annotated[
    timedelta, _duration_within(MAX_NODE_RETURN_TIMEOUT), _AS_DURATION_TEXT
]
HealthGateTimeout = Annotated[
    timedelta, _duration_within(MAX_HEALTH_GATE_TIMEOUT), _AS_DURATION_TEXT
]
HookTimeout = Annotated[timedelta, _duration_within(MAX_HOOK_TIMEOUT), _AS_DURATION_TEXT]
DelayBetweenNodes = Annotated[
    timedelta, _duration_within(MAX_DELAY_BETWEEN_NODES, positive=False), _AS_DURATION_TEXT
]


def _validate_time_of_day(value: object) -> time:
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not re.fullmatch(TIME_OF_DAY_PATTERN, value):
        raise ValueError(MESSAGE_TIME_OF_DAY)
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


TimeOfDay = Annotated[
    time,
    PlainValidator(_validate_time_of_day),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
]


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a Z, the form Kubernetes itself writes (fractions only if any)."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if utc.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def _validate_timestamp(value: object) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(MESSAGE_TIMESTAMP)
        return value
    if not isinstance(value, str) or not re.fullmatch(TIMESTAMP_PATTERN, value):
        raise ValueError(MESSAGE_TIMESTAMP)
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(MESSAGE_TIMESTAMP) from error


Timestamp = Annotated[
    datetime,
    PlainValidator(_validate_timestamp),
    PlainSerializer(format_timestamp, return_type=str),
]


def _validate_int_or_percent(value: object) -> int | str:
    # bool is an int in Python but not in the API: reject it like the API server does.
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(MESSAGE_INT_OR_PERCENT)
        return value
    if isinstance(value, str) and re.fullmatch(PERCENT_PATTERN, value):
        return value
    raise ValueError(MESSAGE_INT_OR_PERCENT)


IntOrPercent = Annotated[int | str, PlainValidator(_validate_int_or_percent)]


def resolve_int_or_percent(value: int | str, total: int) -> int:
    """A budget from maxUnavailable: a number as is, a percentage of `total` rounded down, min 1."""
    if isinstance(value, int):
        return max(1, value)
    percent = int(value.rstrip("%"))
    return max(1, math.floor(total * percent / 100))


def _validate_url(value: str) -> str:
    if not re.fullmatch(URL_PATTERN, value):
        raise ValueError(MESSAGE_URL)
    return value


Url = Annotated[str, Field(max_length=2048), AfterValidator(_validate_url)]


# --- Spec models. ------------------------------------------------------------------------------


class _ApiModel(BaseModel):
    """camelCase in the API, snake_case in Python; unknown fields rejected like `kubectl`
    (strict field validation) rejects them."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class LabelSelectorRequirement(_ApiModel):
    key: str = Field(min_length=1, max_length=317)
    operator: Operator
    values: list[Annotated[str, Field(max_length=63)]] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in (Operator.IN, Operator.NOT_IN)
        if needs_values != bool(self.values):
            raise ValueError(MESSAGE_SELECTOR_VALUES)
        return self


class LabelSelector(_ApiModel):
    """A standard Kubernetes label selector as the CRD spells it (validated here); matching and
    the API's text form are brain.core.selectors' (`selector`). Empty matches everything."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)

    @cached_property
    def selector(self) -> Selector:
        """The one selector implementation's form (built once: the planner matches every node)."""
        return selector_from_object(self.model_dump(by_alias=True))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self.selector.matches(labels)


class MonthlyRule(_ApiModel):
    """A day of the month: the nth weekday ("patch Tuesday": Tue, 2; the last Sunday: Sun, -1)
    or a day number (15; -1 is the last day). A day a month does not have (the 31st, the 5th
    Friday) does not open that month."""

    weekday: Weekday | None = None
    nth: StrictInt | None = None
    day_of_month: StrictInt | None = None

    @model_validator(mode="after")
    def _one_form(self) -> MonthlyRule:
        by_weekday = self.weekday is not None and self.nth is not None and self.day_of_month is None
        by_day = self.weekday is None and self.nth is None and self.day_of_month is not None
        if not (by_weekday or by_day):
            raise ValueError(MESSAGE_MONTHLY_RULE)
        if by_weekday and not (1 <= abs(self.nth or 0) <= 5):
            raise ValueError(MESSAGE_MONTHLY_RULE)
        if by_day and not (1 <= abs(self.day_of_month or 0) <= 31):
            raise ValueError(MESSAGE_MONTHLY_RULE)
        return self

    def matches(self, day: date) -> bool:
        """Whether `day` (a local calendar date) is this rule's day of its month."""
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        if self.day_of_month is not None:
            wanted = self.day_of_month
            return day.day == (wanted if wanted > 0 else days_in_month + 1 + wanted)
        if WEEKDAYS[day.weekday()] != self.weekday:
            return False
        nth = self.nth or 0
        from_start = (day.day - 1) // 7 + 1
        from_end = (days_in_month - day.day) // 7 + 1
        return from_start == nth if nth > 0 else from_end == -nth


class RecurringWindow(_ApiModel):
    """Open every listed day from `start` to `end` local time; end <= start crosses midnight.
    With `monthly` rules, only on the listed days that are also one of those days of the month."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1, max_length=7)
    monthly: list[MonthlyRule] = Field(default_factory=list, max_length=8)
    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _days_unique(self) -> RecurringWindow:
        if len(set(self.days)) != len(self.days):
            raise ValueError(MESSAGE_DAYS_UNIQUE)
        return self

    def opens_on(self, day: date) -> bool:
        """Whether an opening starts on this local calendar date."""
        return WEEKDAYS[day.weekday()] in self.days and (
            not self.monthly or any(rule.matches(day) for rule in self.monthly)
        )


class TimeRange(_ApiModel):
    """An absolute span of time: a one-off opening or a blackout."""

    start: Timestamp
    end: Timestamp

    @model_validator(mode="after")
    def _end_after_start(self) -> TimeRange:
        if self.end <= self.start:
            raise ValueError(MESSAGE_END_AFTER_START)
        return self

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def _validate_time_zone(value: str) -> str:
    if not re.fullmatch(TIME_ZONE_PATTERN, value):
        raise ValueError(MESSAGE_TIME_ZONE_SHAPE)
    if value not in KNOWN_TIME_ZONES:
        raise ValueError(f"{MESSAGE_UNKNOWN_TIME_ZONE} (got {value!r})")
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"{MESSAGE_UNKNOWN_TIME_ZONE} (got {value!r})") from error
    return value


class Schedule(_ApiModel):
    """When the window is open. No `windows` and no `oneOff` means always open; blackouts win."""

    time_zone: Annotated[str, Field(max_length=64), AfterValidator(_validate_time_zone)] = "UTC"
    windows: list[RecurringWindow] = Field(default_factory=list, max_length=32)
    one_off: list[TimeRange] = Field(default_factory=list, max_length=32)
    blackouts: list[TimeRange] = Field(default_factory=list, max_length=32)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


class Topology(_ApiModel):
    """A per-domain limit on top of the window's: at most `max_unavailable` per label value.

    `key` has no default: a topology that does not say what its domains are is a mistake
    (a zone default would silently put every node of an unzoned cluster in one domain)."""

    key: str = Field(min_length=1, max_length=317)
    max_unavailable: IntOrPercent = 1


class OnTimeout(StrEnum):
    ABORT = "Abort"
    FORCE = "Force"


class Drain(_ApiModel):
    enabled: StrictBool = True
    timeout: DrainTimeout = timedelta(minutes=10)
    grace_period_seconds: StrictInt | None = Field(default=None, ge=0, le=86_400)
    pod_selector: LabelSelector | None = None
    delete_empty_dir_data: StrictBool = False
    force: StrictBool = False
    on_timeout: OnTimeout = OnTimeout.ABORT


class PrometheusBlocker(_ApiModel):
    url: Url
    alert_filter: str = Field(default="", max_length=1024)
    filter_match_only: StrictBool = False
    firing_only: StrictBool = True


class PodBlockerScope(StrEnum):
    """Where a matching pod blocks: any node of the window (Window), or only its own (Node)."""

    WINDOW = "Window"
    NODE = "Node"


class PodBlocker(_ApiModel):
    namespace_selector: LabelSelector | None = None
    label_selector: LabelSelector
    # Node is kured's --blocking-pod-selector: a backup pod holds its own node, not the fleet.
    scope: PodBlockerScope = PodBlockerScope.WINDOW


class Blockers(_ApiModel):
    prometheus: PrometheusBlocker | None = None
    pods: list[PodBlocker] = Field(default_factory=list, max_length=16)
    node_annotations: list[Annotated[str, Field(min_length=1, max_length=317)]] = Field(
        default_factory=list, max_length=16
    )


class RebootMethod(StrEnum):
    DBUS = "DBus"
    SIGNAL = "Signal"
    COMMAND = "Command"
    HOST_AGENT = "HostAgent"


class HealthGate(_ApiModel):
    pods_ready: StrictBool = True
    # The node's own DaemonSet pods (CNI, CSI, log shippers) Ready before the uncordon.
    daemon_sets_ready: StrictBool = True
    timeout: HealthGateTimeout = timedelta(minutes=10)


class _PodTemplatePart(BaseModel):
    """A part of the Kubernetes pod template that Pitstop reads or that a Job cannot lack; every
    other field is passed through to the API server as written (extra="allow")."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


class _TemplateContainer(_PodTemplatePart):
    name: str = Field(min_length=1, max_length=63, pattern=CONTAINER_NAME_PATTERN)
    image: str = Field(min_length=1, max_length=1024)


class _TemplatePodSpec(_PodTemplatePart):
    containers: list[_TemplateContainer] = Field(min_length=1, max_length=16)
    initContainers: list[_TemplateContainer] = Field(default_factory=list, max_length=16)  # noqa: N815
    tolerations: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    automountServiceAccountToken: bool | None = None  # noqa: N815


class _TemplateMetadata(_PodTemplatePart):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class _PodTemplate(_PodTemplatePart):
    metadata: _TemplateMetadata | None = None
    spec: _TemplatePodSpec


def _validate_job_template(value: dict[str, Any]) -> dict[str, Any]:
    """Check the pod template's shape when the window is read, not when its first node is
    already drained: build_reboot_job merges into metadata and spec, and a Job needs
    containers with a name and an image. The dict itself is kept as written."""
    try:
        _PodTemplate.model_validate(value)
    except ValidationError as error:
        raise ValueError("; ".join(describe_validation_error(error, prefix=""))) from error
    return value


def _validate_node_labels(labels: dict[str, str]) -> dict[str, str]:
    # The brain's own pitstop.dev/ keys (the detector's flag among them) are not for windows.
    if any(
        not re.fullmatch(QUALIFIED_NAME_PATTERN, key) or key.startswith(f"{GROUP}/")
        for key in labels
    ):
        raise ValueError(MESSAGE_LABEL_KEYS)
    if any(not re.fullmatch(LABEL_VALUE_PATTERN, value) for value in labels.values()):
        raise ValueError(MESSAGE_LABEL_VALUES)
    return labels


NodeLabelMap = Annotated[
    dict[str, str], Field(max_length=16), AfterValidator(_validate_node_labels)
]


class NodeLabels(_ApiModel):
    """kured's --pre/--post-reboot-node-labels: `before` is set with the cordon, `after` with
    the uncordon; each side's keys are removed when the other side's are set."""

    before: NodeLabelMap = Field(default_factory=dict)
    after: NodeLabelMap = Field(default_factory=dict)


class TaintEffect(StrEnum):
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_SCHEDULE = "NoSchedule"


def _validate_taint_key(value: str) -> str:
    if not re.fullmatch(QUALIFIED_NAME_PATTERN, value):
        raise ValueError(MESSAGE_TAINT_KEY)
    return value


class PendingTaint(_ApiModel):
    """The taint on flagged nodes waiting for their turn (kured's --prefer-no-schedule-taint)."""

    enabled: StrictBool = True
    key: Annotated[str, Field(max_length=317), AfterValidator(_validate_taint_key)] = (
        f"{GROUP}/reboot-pending"
    )
    effect: TaintEffect = TaintEffect.PREFER_NO_SCHEDULE


class Reboot(_ApiModel):
    method: RebootMethod = RebootMethod.DBUS
    job_template: Annotated[dict[str, Any], AfterValidator(_validate_job_template)] | None = None
    node_return_timeout: NodeReturnTimeout = timedelta(minutes=15)
    delay_between_nodes: DelayBetweenNodes = timedelta()
    health_gate: HealthGate = Field(default_factory=HealthGate)
    node_labels: NodeLabels = Field(default_factory=NodeLabels)
    pending_taint: PendingTaint = Field(default_factory=PendingTaint)


class Hook(_ApiModel):
    url: Url
    timeout: HookTimeout = timedelta(seconds=10)
    retries: StrictInt = Field(default=3, ge=0, le=20)


class Hooks(_ApiModel):
    pre_drain: Hook | None = None
    post_reboot: Hook | None = None


class NotifyEvent(StrEnum):
    STARTED = "Started"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    BLOCKED = "Blocked"
    CONFLICT = "Conflict"
    WINDOW_OPENED = "WindowOpened"
    ROLLOUT_COMPLETE = "RolloutComplete"


class SecretKeyRef(_ApiModel):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(default="urls", min_length=1, max_length=253)


def _validate_template(text: str) -> str:
    """Only known placeholders, well formed: the API server can check the length only, so a
    window with a bad template is reported invalid by the brain (Ready False) and not acted on."""
    template = string.Template(text)
    if not template.is_valid() or any(
        name not in TEMPLATE_PLACEHOLDERS for name in template.get_identifiers()
    ):
        unknown = sorted(set(template.get_identifiers()) - set(TEMPLATE_PLACEHOLDERS))
        found = f" (found {', '.join('$' + name for name in unknown)})" if unknown else ""
        raise ValueError(MESSAGE_TEMPLATE + found)
    return text


NotifyTemplate = Annotated[str, Field(max_length=4096), AfterValidator(_validate_template)]


class Notify(_ApiModel):
    secret_ref: SecretKeyRef
    events: list[NotifyEvent] = Field(
        default_factory=lambda: [NotifyEvent.SUCCEEDED, NotifyEvent.FAILED], max_length=7
    )
    # kured's --message-template-*: the notification's title and body, in place of the built-in.
    title: NotifyTemplate | None = None
    body: NotifyTemplate | None = None


class EmergencyDrain(StrEnum):
    SKIP = "Skip"
    NORMAL = "Normal"


class Emergency(_ApiModel):
    drain: EmergencyDrain = EmergencyDrain.NORMAL


class WindowSpec(_ApiModel):
    """The spec of a NodesMaintenanceWindow; the field docs live in the CRD descriptions."""

    node_selector: LabelSelector = Field(default_factory=LabelSelector)
    priority: StrictInt = Field(default=0, ge=0, le=1_000_000)
    schedule: Schedule = Field(default_factory=Schedule)
    max_unavailable: IntOrPercent = 1
    count_unhealthy: StrictBool = True
    topology: Topology | None = None
    drain: Drain = Field(default_factory=Drain)
    blockers: Blockers = Field(default_factory=Blockers)
    reboot: Reboot = Field(default_factory=Reboot)
    hooks: Hooks = Field(default_factory=Hooks)
    notify: Notify | None = None
    emergency: Emergency = Field(default_factory=Emergency)
    suspend: StrictBool = False


class WindowSpecError(ValueError):
    """A window whose spec does not parse; the message names the window and every problem."""

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.window = name
        self.problems = tuple(problems)
        super().__init__(f"NodesMaintenanceWindow {name!r} is invalid: " + "; ".join(problems))


def describe_validation_error(error: ValidationError, prefix: str = "spec") -> list[str]:
    """One line per problem, with the API path (`spec.schedule.oneOff[0]: end must be ...`)."""
    lines: list[str] = []
    for detail in error.errors():
        path = prefix
        for part in detail["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        path = path.lstrip(".")
        message = str(detail["msg"]).removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return lines


def parse_window_spec(spec: Mapping[str, Any], name: str = "") -> WindowSpec:
    """Validate a spec dict; raise WindowSpecError naming the window on any problem."""
    try:
        return WindowSpec.model_validate(dict(spec))
    except ValidationError as error:
        raise WindowSpecError(name or "<unnamed>", describe_validation_error(error)) from error


def parse_window_object(window: Mapping[str, Any]) -> tuple[str, int, WindowSpec]:
    """Parse a whole NodesMaintenanceWindow object (as a dict) into (name, generation, spec)."""
    metadata = window.get("metadata") or {}
    name = str(metadata.get("name") or "")
    if not name:
        raise WindowSpecError("<unnamed>", ["metadata.name is missing"])
    kind = window.get("kind")
    if kind is not None and kind != KIND:
        raise WindowSpecError(name, [f"kind is {kind!r}, expected {KIND!r}"])
    spec = window.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, Mapping):
        raise WindowSpecError(name, ["spec must be an object"])
    generation = int(metadata.get("generation") or 0)
    return name, generation, parse_window_spec(spec, name)


# --- Status models. ----------------------------------------------------------------------------


class ConditionType(StrEnum):
    READY = "Ready"
    WINDOW_OPEN = "WindowOpen"
    PROGRESSING = "Progressing"
    BLOCKED = "Blocked"
    DEGRADED = "Degraded"
    CONFLICT = "Conflict"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


# status.nodes is bounded so the window object stays far below etcd's object limit (1.5 MB) at
# any scale: the CRD has the same limits. The brain's own caps (brain/core/status.py) stay
# below these, and `pitstop plan` lists every node.
MAX_STATUS_NODES: Final = 400
MAX_NODE_MESSAGE_LENGTH: Final = 1024
MAX_NODE_NAME_LENGTH: Final = 253  # a Node's name is a DNS subdomain
MAX_CONDITION_MESSAGE_LENGTH: Final = 32_768


class Condition(_ApiModel):
    type: str = Field(min_length=1, max_length=316)
    status: ConditionStatus
    reason: str = Field(default="", max_length=1024)
    message: str = Field(default="", max_length=MAX_CONDITION_MESSAGE_LENGTH)
    last_transition_time: Timestamp
    observed_generation: int = Field(default=0, ge=0)


class NodeStatus(_ApiModel):
    name: str = Field(min_length=1, max_length=MAX_NODE_NAME_LENGTH)
    phase: Phase
    since: Timestamp | None = None
    message: str = Field(default="", max_length=MAX_NODE_MESSAGE_LENGTH)
    # validation_alias/serialization_alias (not alias) keep the Python name in the constructor's
    # signature, so type checkers accept NodeStatus(boot_id_before=...).
    boot_id_before: str = Field(
        default="",
        validation_alias=AliasChoices("bootIDBefore", "boot_id_before"),
        serialization_alias="bootIDBefore",
    )


class Counts(_ApiModel):
    governed: int = Field(default=0, ge=0)
    pending: int = Field(default=0, ge=0)
    in_maintenance: int = Field(default=0, ge=0)
    done: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)


class WindowStatus(_ApiModel):
    observed_generation: int = Field(default=0, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    next_window_start: Timestamp | None = None
    next_window_end: Timestamp | None = None
    nodes: list[NodeStatus] = Field(default_factory=list, max_length=MAX_STATUS_NODES)
    # Nodes waiting, in maintenance or failed that `nodes` leaves out (`pitstop plan` lists them).
    nodes_not_listed: int = Field(default=0, ge=0)
    # When the current rollout's first node was admitted: counts.done counts its reboots.
    rollout_start: Timestamp | None = None
    counts: Counts = Field(default_factory=Counts)

    @model_validator(mode="after")
    def _unique_node_names(self) -> WindowStatus:
        # The CRD's nodes list is a map keyed by name: the API server refuses a name twice.
        names = [node.name for node in self.nodes]
        if len(names) != len(set(names)):
            raise ValueError("status.nodes: a node name is listed twice")
        return self

    def to_api(self) -> dict[str, Any]:
        """The dict to patch into `.status` (camelCase, no None fields)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int = 0,
) -> list[Condition]:
    """A new condition list with one condition set; lastTransitionTime moves only when the status
    changes, so `kubectl describe` shows how long a state has lasted, not when we last looked."""
    result: list[Condition] = []
    found = False
    for condition in conditions:
        if condition.type != condition_type:
            result.append(condition)
            continue
        found = True
        transition_time = condition.last_transition_time if condition.status == status else now
        result.append(
            Condition(
                type=condition_type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition_time,
                observed_generation=observed_generation,
            )
        )
    if not found:
        result.append(
            Condition(
                type=condition_type,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=observed_generation,
            )
        )
    return result
