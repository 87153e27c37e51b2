"""The rollout planner: which nodes may start a reboot now, and why the others wait.

Pure: it decides from the parsed windows, the NodeViews, the lock content, the time and the
blocker results (computed elsewhere), and does no I/O, so the brain and `pitstop plan` print and
apply the very same decisions, and property tests can throw random clusters at it.

Rules:
- Governing: a node belongs to the matching window (nodeSelector) with the highest priority. Two
  or more matching windows sharing the highest priority are a conflict: none of them touches the
  node, and each reports it.
- Pending: flagged (reboot-required), governed, not in the lock at all, and not resting (after an
  aborted drain until its retry time; after a reboot the lock records, until flagged anew).
- Budget of a window: maxUnavailable (a number, or a percentage of the governed nodes rounded
  down, at least 1). It is used by the window's lease holders (every slot-holding phase, Failed
  included) and, unless countUnhealthy is false, by governed nodes that are NotReady or
  unschedulable and hold no slot ("unhealthy"). With a topology, each domain (label value) has
  its own limit computed the same way from the governed nodes of that domain.
- An unhealthy pending node is already counted, so starting it takes no second slot; but lease
  holders plus starts never exceed the limit.
- A pending node may start when: the window is not suspended; no lease of the window is Failed
  (a failure pauses the window until a person acts); the window is open, or the node is an
  emergency; no blocker holds the window or (scope Node) the node, or the node is an emergency
  (a node held by its own blocker waits, the next one may start); delayBetweenNodes has passed since
  the window's last finished reboot; and budget is left for the window and the node's domain.
- Order: emergency nodes first, then the pitstop.dev/priority annotation (higher first), then
  the oldest reboot-required-since (nodes without one last; a time before the node's creation
  or in the future counts as none, see node_view.believable_since), then the name.
- Batches (for the preview): the pending nodes in that order, filling batch 1 with the budget
  left now and every later batch with the full budget, per domain too; empty batches are not
  numbered.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from brain.core.clock import plus
from brain.core.lock_state import CompletedReboot, LockState, NodeLease
from brain.core.node_view import NodeView, believable_since
from brain.core.phase import IN_MAINTENANCE, Phase
from brain.core.schedule import current_end, is_open, next_open
from brain.core.window import WindowSpec, resolve_int_or_percent


@dataclass(frozen=True)
class NamedWindow:
    """A parsed window: the planner's input for one NodesMaintenanceWindow."""

    name: str
    spec: WindowSpec


class HoldReason(StrEnum):
    """Why a flagged node does not start now (one reason each, the first that applies)."""

    CONFLICT = "Conflict"
    IN_LOCK = "InLock"
    SUSPENDED = "Suspended"
    PAUSED_BY_FAILURE = "PausedByFailure"
    WINDOW_CLOSED = "WindowClosed"
    BLOCKED = "Blocked"
    NODE_BLOCKED = "NodeBlocked"  # a scope-Node blocker (a pod on it) holds this node only
    DELAY_BETWEEN_NODES = "DelayBetweenNodes"
    NO_BUDGET = "NoBudget"
    NO_DOMAIN_BUDGET = "NoDomainBudget"
    RESTING = "Resting"  # after its recorded reboot, or an aborted drain (resting_nodes)


@dataclass(frozen=True)
class HeldBack:
    node: str
    reason: HoldReason
    message: str


@dataclass(frozen=True)
class Conflict:
    """A node matched by several windows with the same, highest priority."""

    node: str
    windows: tuple[str, ...]
    priority: int


@dataclass(frozen=True)
class PendingNode:
    """A flagged node waiting in a window's queue, with its place in the preview."""

    name: str
    priority: int
    since: datetime | None
    emergency: bool
    domain: str
    unhealthy: bool
    batch: int
    since_ignored: str = ""  # why its flag time does not count (NodeView.since_ignored)


@dataclass(frozen=True)
class Start:
    """A node the brain may take into maintenance now (take its slot in the lock, then drain)."""

    node: str
    window: str
    emergency: bool
    domain: str


@dataclass(frozen=True)
class Budget:
    """A window's (or one domain's) maxUnavailable and what uses it."""

    governed: int
    limit: int
    in_maintenance: int
    unhealthy: int  # counted ones only (0 when countUnhealthy is false)

    @property
    def used(self) -> int:
        return self.in_maintenance + self.unhealthy

    @property
    def available(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class DomainBudget:
    domain: str
    budget: Budget


@dataclass(frozen=True)
class WindowPlan:
    name: str
    is_open: bool
    # When the current opening closes (None if closed, or open for the whole look-ahead).
    open_until: datetime | None
    # The next opening after the current one (or after now if closed), and its end.
    next_open: datetime | None
    next_close: datetime | None
    suspended: bool
    blocked_reason: str | None
    delay_until: datetime | None  # set while delayBetweenNodes since the last finish runs
    governed: tuple[str, ...]
    pending: tuple[PendingNode, ...]  # in start order, with batch numbers
    in_maintenance: tuple[str, ...]  # lease holders of this window, Failed included
    failed: tuple[str, ...]
    unhealthy: tuple[str, ...]  # governed, NotReady or unschedulable, holding no slot
    budget: Budget
    domains: tuple[DomainBudget, ...]
    starts: tuple[Start, ...]
    held_back: tuple[HeldBack, ...]
    conflicts: tuple[Conflict, ...]
    topology_key: str | None = None


@dataclass(frozen=True)
class Plan:
    now: datetime
    windows: tuple[WindowPlan, ...]
    governing: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    conflicts: tuple[Conflict, ...] = ()
    # Windows the planner failed on (name -> the error, one line): they have no WindowPlan,
    # start nothing, and keep governing their nodes; every other window is planned as usual.
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def window(self, name: str) -> WindowPlan:
        for window_plan in self.windows:
            if window_plan.name == name:
                return window_plan
        raise KeyError(name)

    @property
    def starts(self) -> tuple[Start, ...]:
        return tuple(start for window_plan in self.windows for start in window_plan.starts)


# --- Governing. --------------------------------------------------------------------------------


# Who governs which node, and the conflicts: from the windows and the nodes' labels only, so a
# caller that plans several times on the same windows and nodes (a pass, its admissions) computes
# it once (`governing_of`) and hands it to make_plan.
Assignment = tuple[dict[str, str], list[Conflict]]


def governing_of(windows: Sequence[NamedWindow], nodes: Iterable[NodeView]) -> Assignment:
    """assign_windows in make_plan's order (by window name, by node name)."""
    ordered_windows = sorted(windows, key=lambda window: window.name)
    return assign_windows(ordered_windows, sorted(nodes, key=lambda node: node.name))


def assign_windows(
    windows: Sequence[NamedWindow], nodes: Iterable[NodeView]
) -> tuple[dict[str, str], list[Conflict]]:
    """node name -> governing window name, and the conflicts (nodes governed by none)."""
    governing: dict[str, str] = {}
    conflicts: list[Conflict] = []
    for node in nodes:
        matching = [window for window in windows if window.spec.node_selector.matches(node.labels)]
        if not matching:
            continue
        top = max(window.spec.priority for window in matching)
        winners = sorted(window.name for window in matching if window.spec.priority == top)
        if len(winners) == 1:
            governing[node.name] = winners[0]
        else:
            conflicts.append(Conflict(node=node.name, windows=tuple(winners), priority=top))
    conflicts.sort(key=lambda conflict: conflict.node)
    return governing, conflicts


# --- Ordering and admission. -------------------------------------------------------------------

_OLDEST = datetime.min.replace(tzinfo=UTC)


def _as_aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def start_order_key(node: NodeView) -> tuple[bool, int, bool, datetime, str]:
    """Emergencies first, higher priority annotation, oldest flag (none last), then name."""
    since = node.reboot_required_since
    return (
        not node.emergency,
        -node.priority,
        since is None,
        _as_aware(since) if since is not None else _OLDEST,
        node.name,
    )


@dataclass
class _Capacity:
    """Slots left while admitting nodes in order: total (leases + counted unhealthy) and leases
    alone, for the window and per domain."""

    window_total: int
    window_leases: int
    domain_total: dict[str, int]
    domain_leases: dict[str, int]

    def admit(self, domain: str, unhealthy: bool) -> HoldReason | None:
        """Take a slot for the node, or say which limit stops it."""
        if self.window_leases <= 0 or (not unhealthy and self.window_total <= 0):
            return HoldReason.NO_BUDGET
        if self.domain_leases.get(domain, 0) <= 0 or (
            not unhealthy and self.domain_total.get(domain, 0) <= 0
        ):
            return HoldReason.NO_DOMAIN_BUDGET
        self.window_leases -= 1
        self.domain_leases[domain] -= 1
        if not unhealthy:
            self.window_total -= 1
            self.domain_total[domain] -= 1
        return None


def _assign_batches(
    ordered: Sequence[tuple[NodeView, str, bool]],
    first: _Capacity,
    window_limit: int,
    domain_limits: Mapping[str, int],
) -> dict[str, int]:
    """Batch number per pending node: batch 1 uses what is left now, later ones full limits."""
    batches: dict[str, int] = {}
    remaining = list(ordered)
    capacity = first
    number = 0
    while remaining:
        admitted = []
        waiting = []
        for index, (node, domain, unhealthy) in enumerate(remaining):
            if capacity.window_leases <= 0:
                # The window is full: no later node fits in this batch (O(pending) per batch,
                # not O(pending) calls: 5,000 pending under a limit of 100 took 0.36 s).
                waiting.extend(remaining[index:])
                break
            if capacity.admit(domain, unhealthy) is None:
                admitted.append(node)
            else:
                waiting.append((node, domain, unhealthy))
        if admitted:
            number += 1
            for node in admitted:
                batches[node.name] = number
        remaining = waiting
        capacity = _Capacity(
            window_total=window_limit,
            window_leases=window_limit,
            domain_total=dict(domain_limits),
            domain_leases=dict(domain_limits),
        )
    return batches


# --- The plan. ---------------------------------------------------------------------------------


def _holds_slot(lease: NodeLease) -> bool:
    return lease.phase in IN_MAINTENANCE


def _is_unhealthy(node: NodeView) -> bool:
    return not node.ready or node.unschedulable


def _plan_window(
    window: NamedWindow,
    nodes_by_name: Mapping[str, NodeView],
    governing: Mapping[str, str],
    conflicts: Sequence[Conflict],
    lock: LockState,
    now: datetime,
    blocked_reason: str | None,
    resting: Mapping[str, str],
    node_blockers: Mapping[str, str],
    with_batches: bool = True,
) -> WindowPlan:
    spec = window.spec
    name = window.name
    topology_key = spec.topology.key if spec.topology is not None else None

    def domain_of(node: NodeView | None, recorded: str = "") -> str:
        if topology_key is None:
            return ""
        if recorded:
            return recorded
        return node.labels.get(topology_key, "") if node is not None else ""

    governed = sorted(node for node, owner in governing.items() if owner == name)
    slot_holders = {node for node, lease in lock.nodes.items() if _holds_slot(lease)}
    leases = {node: lease for node, lease in lock.nodes.items() if lease.window == name}
    in_maintenance = sorted(node for node, lease in leases.items() if _holds_slot(lease))
    failed = sorted(node for node, lease in leases.items() if lease.phase is Phase.FAILED)
    unhealthy = [
        node for node in governed if node not in slot_holders and _is_unhealthy(nodes_by_name[node])
    ]
    counted_unhealthy = unhealthy if spec.count_unhealthy else []

    # Window budget.
    limit = resolve_int_or_percent(spec.max_unavailable, len(governed))
    budget = Budget(
        governed=len(governed),
        limit=limit,
        in_maintenance=len(in_maintenance),
        unhealthy=len(counted_unhealthy),
    )

    # Domain budgets (one domain "" without topology, with the window's own limit).
    governed_per_domain = Counter(domain_of(nodes_by_name[node]) for node in governed)
    leases_per_domain = Counter(
        domain_of(nodes_by_name.get(node), leases[node].domain) for node in in_maintenance
    )
    unhealthy_per_domain = Counter(domain_of(nodes_by_name[node]) for node in counted_unhealthy)
    domain_limits: dict[str, int] = {}
    domain_budgets: list[DomainBudget] = []
    for domain in sorted(set(governed_per_domain) | set(leases_per_domain)):
        if spec.topology is not None:
            domain_limit = resolve_int_or_percent(
                spec.topology.max_unavailable, governed_per_domain[domain]
            )
        else:
            domain_limit = limit
        domain_limits[domain] = domain_limit
        domain_budgets.append(
            DomainBudget(
                domain=domain,
                budget=Budget(
                    governed=governed_per_domain[domain],
                    limit=domain_limit,
                    in_maintenance=leases_per_domain[domain],
                    unhealthy=unhealthy_per_domain[domain],
                ),
            )
        )

    def capacity_now() -> _Capacity:
        return _Capacity(
            window_total=limit - budget.used,
            window_leases=limit - budget.in_maintenance,
            domain_total={d.domain: d.budget.limit - d.budget.used for d in domain_budgets},
            domain_leases={
                d.domain: d.budget.limit - d.budget.in_maintenance for d in domain_budgets
            },
        )

    # The queue.
    held_back: list[HeldBack] = []
    queue: list[NodeView] = []
    for node_name in governed:
        node = nodes_by_name[node_name]
        if not node.reboot_required:
            continue
        lease = lock.nodes.get(node_name)
        if lease is None and node_name in resting:
            held_back.append(HeldBack(node_name, HoldReason.RESTING, resting[node_name]))
        elif lease is None:
            queue.append(node)
        elif not _holds_slot(lease):
            held_back.append(
                HeldBack(node_name, HoldReason.IN_LOCK, f"already in the lock ({lease.phase})")
            )
    queue.sort(key=start_order_key)
    unhealthy_set = set(counted_unhealthy)
    ordered = [(node, domain_of(node), node.name in unhealthy_set) for node in queue]
    batches = _assign_batches(ordered, capacity_now(), limit, domain_limits) if with_batches else {}

    # Schedule.
    open_now = is_open(spec.schedule, now)
    if open_now:
        open_until = current_end(spec.schedule, now)
        upcoming = next_open(spec.schedule, open_until) if open_until is not None else None
    else:
        open_until = None
        upcoming = next_open(spec.schedule, now)
    upcoming_end = current_end(spec.schedule, upcoming) if upcoming is not None else None

    record = lock.windows.get(name)
    delay_until: datetime | None = None
    if record is not None and record.last_finished is not None:
        candidate = plus(_as_aware(record.last_finished), spec.reboot.delay_between_nodes)
        if candidate > now:
            delay_until = candidate

    # Who starts.
    starts: list[Start] = []
    capacity = capacity_now()
    for node, domain, is_unhealthy in ordered:
        reason: HoldReason | None
        message = ""
        if spec.suspend:
            reason, message = HoldReason.SUSPENDED, "the window is suspended"
        elif failed:
            reason = HoldReason.PAUSED_BY_FAILURE
            message = f"rollout paused: {', '.join(failed)} failed (pitstop retry/release)"
        elif not open_now and not node.emergency:
            reason = HoldReason.WINDOW_CLOSED
            message = "the window is closed" + (
                f" (opens {upcoming.isoformat()})" if upcoming else " (no opening ahead)"
            )
        elif blocked_reason is not None and not node.emergency:
            reason, message = HoldReason.BLOCKED, f"blocked: {blocked_reason}"
        elif node.name in node_blockers and not node.emergency:
            reason = HoldReason.NODE_BLOCKED
            message = f"blocked on this node: {node_blockers[node.name]}"
        elif delay_until is not None:
            reason = HoldReason.DELAY_BETWEEN_NODES
            message = f"waiting for delayBetweenNodes until {delay_until.isoformat()}"
        else:
            reason = capacity.admit(domain, is_unhealthy)
            if reason is HoldReason.NO_BUDGET:
                message = f"no budget left: {budget.used} of {limit} unavailable"
            elif reason is HoldReason.NO_DOMAIN_BUDGET:
                message = f"no budget left in {topology_key}={domain or '<none>'}"
        if reason is None:
            starts.append(Start(node.name, name, node.emergency, domain))
        else:
            held_back.append(HeldBack(node.name, reason, message))

    own_conflicts = tuple(conflict for conflict in conflicts if name in conflict.windows)
    for conflict in own_conflicts:
        node = nodes_by_name[conflict.node]
        if node.reboot_required and conflict.node not in lock.nodes:
            others = ", ".join(other for other in conflict.windows if other != name)
            held_back.append(
                HeldBack(
                    conflict.node,
                    HoldReason.CONFLICT,
                    f"also selected by {others} with the same priority {conflict.priority}",
                )
            )

    pending = tuple(
        PendingNode(
            name=node.name,
            priority=node.priority,
            since=node.reboot_required_since,
            since_ignored=node.since_ignored,
            emergency=node.emergency,
            domain=domain,
            unhealthy=is_unhealthy,
            batch=batches.get(node.name, 0),
        )
        for node, domain, is_unhealthy in ordered
    )
    return WindowPlan(
        name=name,
        is_open=open_now,
        open_until=open_until,
        next_open=upcoming,
        next_close=upcoming_end,
        suspended=spec.suspend,
        blocked_reason=blocked_reason,
        delay_until=delay_until,
        governed=tuple(governed),
        pending=pending,
        in_maintenance=tuple(in_maintenance),
        failed=tuple(failed),
        unhealthy=tuple(unhealthy),
        budget=budget,
        domains=tuple(domain_budgets),
        starts=tuple(starts),
        held_back=tuple(held_back),
        conflicts=own_conflicts,
        topology_key=topology_key,
    )


def _rebooted(done: CompletedReboot) -> bool:
    """Did this maintenance reboot its node? Rebooted, or released by a person after its reboot
    (a release in WaitingForNode or HealthCheck): either way the flag it had is seen to."""
    if done.result == "Rebooted":
        return True
    return (
        done.result == "Released"
        and bool(done.boot_id_before)
        and done.boot_id not in ("", done.boot_id_before)
    )


def resting_nodes(nodes: Sequence[NodeView], lock: LockState, now: datetime) -> dict[str, str]:
    """Flagged nodes that must not start now, with why (they are held back as Resting):

    - a node whose drain was aborted, or released before it rebooted, rests until its retry
      time;
    - a node rebooted at its current boot ID (finished, or released after its reboot) that is
      still flagged from before that reboot (its detector has not caught up yet, or the reboot
      did not clear the flag): it is not rebooted again until its detector flags it anew, so
      there is no reboot loop;
    - a node that a view older than its recorded reboot still shows at the boot it was rebooted
      from (another brain finished it a moment ago and this brain's Node watch lags): it waits
      for the view to catch up instead of being admitted for a second reboot.
    """
    by_name = {node.name: node for node in nodes if node.reboot_required}
    resting: dict[str, str] = {}
    for record in lock.windows.values():
        for name, until in record.retry_after.items():
            if name in by_name and until > now:
                resting[name] = (
                    f"its drain was aborted or it was released; tried again after "
                    f"{until:%Y-%m-%dT%H:%M:%SZ}"
                )
        for done in record.completed:
            node = by_name.get(done.node)
            if (
                node is not None
                and _rebooted(done)
                and done.boot_id
                and node.boot_id == done.boot_id
                and (
                    node.reboot_required_since is None
                    or node.reboot_required_since <= done.finished
                )
            ):
                resting[done.node] = (
                    "rebooted at its current boot; still flagged from before that reboot, it "
                    "waits for its detector to flag it anew"
                )
            elif (
                node is not None
                and _rebooted(done)
                and done.boot_id_before
                and node.boot_id == done.boot_id_before
                and done.boot_id != done.boot_id_before
            ):
                resting[done.node] = (
                    "just rebooted (recorded in the lock); waiting for the Node to show its "
                    "new boot"
                )
    return resting


def make_plan(
    windows: Sequence[NamedWindow],
    nodes: Sequence[NodeView],
    lock: LockState,
    now: datetime,
    blockers: Mapping[str, str | None] | None = None,
    node_blockers: Mapping[str, str] | None = None,
    assignment: Assignment | None = None,
    batches: bool = True,
) -> Plan:
    """Decide, for every window, who it governs, who waits, who may start now and why not.

    `blockers` maps a window name to the reason it is blocked (None or absent: not blocked);
    `node_blockers` a node name to the reason only that node is held (scope Node blockers).
    `assignment`: governing_of(windows, nodes), when the caller has it already. `batches=False`
    leaves the preview's batch numbers out (0): an admission needs only `starts`.
    The result does not depend on the order of `windows` or `nodes`.
    """
    if now.tzinfo is None:
        raise ValueError("make_plan needs an aware `now`")
    names = [window.name for window in windows]
    if len(set(names)) != len(names):
        raise ValueError(f"window names must be unique: {sorted(names)}")
    # A flag time before the node's creation or in the future is not believed (it would jump
    # the queue, or make a rebooted node look flagged anew).
    nodes = [believable_since(node, now) for node in nodes]
    nodes_by_name = {node.name: node for node in nodes}
    # Decided on the same lock as everything else, so a reboot the lock has just recorded
    # rests its node in this very plan (not one pass later).
    resting = resting_nodes(nodes, lock, now)
    ordered_windows = sorted(windows, key=lambda window: window.name)
    if assignment is None:
        ordered_nodes = [nodes_by_name[name] for name in sorted(nodes_by_name)]
        assignment = assign_windows(ordered_windows, ordered_nodes)
    governing, conflicts = assignment
    blockers = blockers or {}
    window_plans: list[WindowPlan] = []
    errors: dict[str, str] = {}
    for window in ordered_windows:
        # One window's spec or lock record can never break the plan of another.
        try:
            window_plans.append(
                _plan_window(
                    window,
                    nodes_by_name,
                    governing,
                    conflicts,
                    lock,
                    now,
                    blockers.get(window.name),
                    resting,
                    node_blockers or {},
                    batches,
                )
            )
        except Exception as error:  # reported per window, never raised
            errors[window.name] = describe_error(error)
    return Plan(
        now=now,
        windows=tuple(window_plans),
        governing=MappingProxyType(dict(sorted(governing.items()))),
        conflicts=tuple(conflicts),
        errors=MappingProxyType(errors),
    )


def describe_error(error: BaseException) -> str:
    """An error in one line: its type and the first line of its text."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
