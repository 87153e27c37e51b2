"""Model-based test of the rollout: the real planner, decider and lock edits against a model.

Hypothesis drives an in-memory cluster (nodes that are flagged, cordoned, Ready - which lags a
reboot until the node controller notices -, rebooted by Jobs; some never return or keep their
boot ID), a lock with optimistic concurrency (a write on a stale version fails and the brain
reads again) and two brains, each with its own memory and its own, possibly stale, view of the
nodes and of the lock. Rules: a brain's pass, a crash, a
drain's end, a Job's run, a node's return, a person's retry/release/uncordon, the detector,
time, the window opening and closing, an emergency. After every rule the safety invariants
hold; at the end, run to quiescence with the window open and every node returning, no node is
left in the middle of its maintenance.

What is real here: `make_plan` (who may start), `admission_lease`, `decide` (every step) and
`lease_writes` (every lock edit, each phase change checked against TRANSITIONS). What is
modelled: the I/O the flow does for a step (brain/flow.py's executor, simplified below: a
drain is a task a rule finishes, a Job reboots its node when a rule runs it, hooks are off).
A Job is for the boot it was made at: run on a node that has booted since, it does nothing and
succeeds, as `pitstop-reboot --boot-id` does (a person's release or retry mid-reboot can have
the next maintenance make a Job for the boot the node is leaving).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brain.core.decide import (
    FEEDS_BACK,
    Check,
    DrainSeen,
    DrainState,
    JobCreated,
    JobSeen,
    Need,
    Observations,
    Step,
    StepKind,
    decide,
)
from brain.core.lease_writes import admission_lease, finish_lease, move_lease, update_lease
from brain.core.lock_state import LockState, NodeLease, WindowRecord
from brain.core.node_view import NodeView
from brain.core.phase import IN_MAINTENANCE, Phase
from brain.core.planner import NamedWindow, make_plan
from brain.core.window import WindowSpec, parse_window_spec
from brain.lease_memory import LeaseKey
from brain.reboot.reboot_job import maintenance_job_name

settings.register_profile(
    "rollout-model",
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

WINDOW = "w"
ZONE = "topology.kubernetes.io/zone"
ZONES = {"n0": "a", "n1": "a", "n2": "b", "n3": "b", "n4": "c"}
NAMES = sorted(ZONES)
WINDOW_LIMIT = 2
DOMAIN_LIMIT = 1
START = datetime(2025, 6, 4, 12, 0, tzinfo=UTC)
BASE_SPEC: dict[str, Any] = {
    "maxUnavailable": WINDOW_LIMIT,
    "topology": {"key": ZONE, "maxUnavailable": DOMAIN_LIMIT},
    "drain": {"timeout": "10m"},
    "reboot": {"nodeReturnTimeout": "15m", "healthGate": {"timeout": "10m"}},
}
OPEN_SPEC = parse_window_spec(BASE_SPEC, WINDOW)
# Open only on one day long past: closed for the whole test.
CLOSED_SPEC = parse_window_spec(
    {
        **BASE_SPEC,
        "schedule": {"oneOff": [{"start": "2000-01-01T00:00:00Z", "end": "2000-01-02T00:00:00Z"}]},
    },
    WINDOW,
)
RETURNS, NEVER_RETURNS, KEEPS_BOOT = "returns", "never returns", "keeps its boot"


@dataclass
class ModelNode:
    """A node as the API (and the host) has it."""

    name: str
    boot: int = 0
    flagged: bool = False
    flagged_since: datetime | None = None
    flag_boot: int = 0  # the boot the detector flagged it at
    cordoned: bool = False
    ready: bool = True  # as the API shows it: Ready lags a reboot until the node controller sees
    down: bool = False  # rebooting, until it returns
    rebooting_for: str = ""  # the boot ID of the Job that took it down
    behaviour: str = RETURNS
    emergency: bool = False
    action: str = ""
    action_since: str = ""
    marked: str = ""  # the pitstop.dev/window annotation

    @property
    def boot_id(self) -> str:
        return f"{self.name}-boot-{self.boot}"

    def view(self) -> NodeView:
        return NodeView(
            name=self.name,
            labels={ZONE: ZONES[self.name]},
            reboot_required=self.flagged,
            reboot_required_since=self.flagged_since,
            emergency=self.emergency,
            unschedulable=self.cordoned,
            ready=self.ready,
            boot_id=self.boot_id,
            action=self.action,
            action_since=self.action_since,
        )


@dataclass
class ModelJob:
    node: str
    boot_id: str  # the boot the Job is for (its pitstop.dev/boot-id)
    attempt: int = 1
    state: JobSeen = JobSeen.RUNNING


@dataclass
class DrainTask:
    key: LeaseKey
    outcome: DrainSeen = field(default_factory=lambda: DrainSeen(DrainState.RUNNING))


@dataclass
class Brain:
    """One brain process: what it remembers, its cached lock and its (maybe stale) node view."""

    lock: str | None = None  # the lock's JSON as last read or written; None: not read yet
    version: int = -1
    view: dict[str, NodeView] = field(default_factory=dict)
    drains: dict[str, DrainTask] = field(default_factory=dict)
    saw_not_ready: set[LeaseKey] = field(default_factory=set)
    drain_started: set[LeaseKey] = field(default_factory=set)
    cordoned: set[LeaseKey] = field(default_factory=set)
    # Nodes this brain uncordoned since its view was last fresh (flow.recently_uncordoned).
    uncordoned: set[str] = field(default_factory=set)

    def forget(self, name: str) -> None:
        self.drains.pop(name, None)
        for memory in (self.saw_not_ready, self.drain_started, self.cordoned):
            memory.difference_update({key for key in memory if key.node == name})


class RolloutModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.window_open = True
        self.nodes = {name: ModelNode(name) for name in NAMES}
        self.jobs: dict[str, ModelJob] = {}
        self.lock_text = LockState().to_json()  # the ConfigMap's data (copies are cheap)
        self.lock = LockState()  # parsed, for the invariants (never handed to a brain)
        self.version = 0
        self.brains = [Brain(), Brain()]
        self.reboots: Counter[tuple[str, str]] = Counter()
        # node -> the phase start of the lease a person acted on (pitstop retry/release)
        self.person_asked: dict[str, datetime] = {}
        self.violations: list[str] = []

    # -- the world's plumbing --------------------------------------------------------------------

    @property
    def spec(self) -> WindowSpec:
        return OPEN_SPEC if self.window_open else CLOSED_SPEC

    def read_lock(self, brain: Brain) -> LockState:
        brain.lock, brain.version = self.lock_text, self.version
        return LockState.from_json(brain.lock)

    def cached_lock(self, brain: Brain) -> LockState:
        return self.read_lock(brain) if brain.lock is None else LockState.from_json(brain.lock)

    def update_lock(self, brain: Brain, edit: Any) -> LockState:
        """LockStore.update: decide on the cached copy; a stale version (409): read, again."""
        if brain.lock is None:
            self.read_lock(brain)
        for _ in range(5):
            assert brain.lock is not None
            proposed = edit(LockState.from_json(brain.lock))
            if proposed is None:
                return LockState.from_json(brain.lock)
            if brain.version == self.version:
                self.write_lock(proposed)
                brain.lock, brain.version = self.lock_text, self.version
                return proposed
            self.read_lock(brain)
        raise AssertionError("the lock changed 5 times in a row")

    def write_lock(self, new: LockState) -> None:
        """The one place the lock changes: check what a write may never do."""
        for name, old in self.lock.nodes.items():
            current = new.nodes.get(name)
            changed = current is None or current.phase != old.phase
            asked = self.person_asked.get(name) == old.since
            if old.phase is Phase.FAILED and changed and not asked:
                self.violations.append(f"{name}: Failed lost its slot without a person's action")
        for name in new.nodes.keys() - self.lock.nodes.keys():
            if not self.window_open and not self.nodes[name].emergency:
                self.violations.append(f"{name}: admitted while the window is closed")
        self.lock_text, self.version = new.to_json(), self.version + 1
        self.lock = LockState.from_json(self.lock_text)

    # -- one brain's pass (brain/reconciler.py's, for one window) --------------------------------

    def admission(self, brain: Brain) -> Any:
        """reconciler._admission: admit what the plan made on the state being written allows."""
        view = dict(brain.view)
        spec = self.spec

        def admit(state: LockState, now: datetime) -> list[str]:
            nodes = [
                replace(node, unschedulable=False) if name in brain.uncordoned else node
                for name, node in view.items()
            ]
            plan = make_plan([NamedWindow(WINDOW, spec)], nodes, state, now)
            starts = plan.window(WINDOW).starts
            for start in starts:
                state.nodes[start.node] = admission_lease(
                    view[start.node], WINDOW, spec, now, start.emergency, start.domain
                )
            if starts:
                state.windows.setdefault(WINDOW, WindowRecord()).spec = {}
            return [start.node for start in starts]

        return admit

    def brain_pass(self, brain: Brain, fresh_view: bool, fresh_lock: bool) -> None:
        if fresh_view or not brain.view:
            brain.view = {name: node.view() for name, node in self.nodes.items()}
            brain.uncordoned.clear()
        lock = self.read_lock(brain) if fresh_lock else self.cached_lock(brain)
        plan = make_plan(
            [NamedWindow(WINDOW, self.spec)], list(brain.view.values()), lock, self.now
        )
        if plan.window(WINDOW).starts:
            admit = self.admission(brain)
            lock = self.update_lock(brain, lambda state: state if admit(state, self.now) else None)
        for name, lease in lock.nodes.items():
            if lease.window == WINDOW:
                self.advance(brain, name, lease, brain.view.get(name))
        # refuse_stray_actions: an action on a node not in maintenance is removed.
        fresh = self.read_lock(brain)
        for name, node in self.nodes.items():
            if node.action and name not in fresh.nodes:
                node.action = node.action_since = ""

    # -- one node's step (brain/flow.py's executor, its I/O simplified) --------------------------

    def advance(self, brain: Brain, name: str, lease: NodeLease, node: NodeView | None) -> None:
        key = LeaseKey.of(name, lease)
        if node is not None and lease.phase is Phase.WAITING_FOR_NODE and not node.ready:
            brain.saw_not_ready.add(key)
        deadline_passed = lease.deadline is not None and self.now >= lease.deadline
        seen = Observations(
            deadline_passed=deadline_passed, saw_not_ready=key in brain.saw_not_ready
        )
        for _ in range(16):
            step = decide(lease, node, self.spec, seen, self.now)
            if step.kind in FEEDS_BACK:
                seen = self.learn(brain, name, lease, step, seen)
                continue
            self.carry_out(brain, name, lease, node, step)
            return
        raise AssertionError(f"{name}: no step decided")

    def learn(
        self, brain: Brain, name: str, lease: NodeLease, step: Step, seen: Observations
    ) -> Observations:
        world = self.nodes[name]
        key = LeaseKey.of(name, lease)
        if step.kind is StepKind.REFUSE_ACTION:
            world.action = world.action_since = ""
            return replace(seen, action_refused=True)
        if step.kind is StepKind.CORDON:
            world.cordoned, world.marked = True, WINDOW
            brain.cordoned.add(key)
            return replace(seen, cordon=world.view())
        if step.kind is StepKind.FORCE_DELETE:
            return replace(seen, force_deleted=0)
        if step.kind is StepKind.CREATE_JOB:
            if not world.cordoned:
                self.violations.append(f"{name}: reboot Job created on an uncordoned node")
            job_name = lease.job_name or f"job-{name}-{lease.boot_id_before}"
            created = job_name not in self.jobs
            if created:
                self.jobs[job_name] = ModelJob(name, lease.boot_id_before, lease.attempt)
            return replace(seen, job_created=JobCreated(job_name, f"ns/{job_name}", created))
        if step.need is Need.DRAIN:
            task = brain.drains.get(name)
            if task is not None and task.key != key:  # an earlier visit's drain: stopped
                del brain.drains[name]
                task = None
            if task is None:
                return replace(seen, drain=DrainSeen(DrainState.NONE))
            if task.outcome.state is not DrainState.RUNNING:
                del brain.drains[name]
            return replace(seen, drain=task.outcome)
        if step.need is Need.CORDONED_NOW:
            return replace(seen, cordoned_now=world.cordoned)
        if step.need is Need.LEASE_CURRENT:
            current = self.read_lock(brain).nodes.get(name)
            same = current is not None and current.phase == lease.phase
            return replace(seen, lease_current=same and LeaseKey.of(name, current) == key)
        if step.need is Need.FRESH_NODE:
            return replace(seen, fresh_node_read=True, fresh_node=world.view())
        if step.need is Need.JOB:
            job = self.jobs.get(lease.job_name)
            return replace(seen, job=job.state if job is not None else JobSeen.MISSING)
        if step.need is Need.PDBS:
            return replace(seen, pdbs=Check(True))
        if step.need is Need.DAEMON_SETS:
            return replace(seen, daemon_sets=Check(world.ready))
        if step.need is Need.LOCK_LEASE:
            return replace(seen, lock_read=True, lock_lease=self.read_lock(brain).nodes.get(name))
        raise AssertionError(f"{name}: unexpected {step}")

    def write_lease(self, brain: Brain, name: str, lease: NodeLease, edit: Any) -> bool:
        applied = gone = False

        def decide_write(state: LockState) -> LockState | None:
            nonlocal applied, gone
            gone = name not in state.nodes
            applied = edit(state)
            return state if applied else None

        self.update_lock(brain, decide_write)
        world = self.nodes[name]
        if gone and LeaseKey.of(name, lease) in brain.cordoned:
            # _undo_stale_cordon: only while the node still carries our window mark.
            brain.forget(name)
            if world.marked == WINDOW:
                world.marked = ""
                if not lease.was_cordoned:
                    world.cordoned = False
        return applied

    def carry_out(
        self, brain: Brain, name: str, lease: NodeLease, node: NodeView | None, step: Step
    ) -> None:
        world = self.nodes[name]
        if step.kind is StepKind.WAIT:
            if step.record_message is not None:
                message = step.record_message
                self.write_lease(
                    brain, name, lease, lambda s: update_lease(s, name, lease, {"message": message})
                )
        elif step.kind is StepKind.START_DRAIN:
            if not world.cordoned:
                self.violations.append(f"{name}: drain started on an uncordoned node")
            key = LeaseKey.of(name, lease)
            brain.drains[name] = DrainTask(key)
            brain.drain_started.add(key)
        elif step.kind is StepKind.STOP_DRAIN:
            brain.drains.pop(name, None)
        elif step.kind is StepKind.MOVE:
            assert step.target is not None
            target = step.target
            changes = dict(step.changes)
            if step.name_job:
                changes["job_name"] = maintenance_job_name(
                    name, str(changes["boot_id_before"]), lease.attempt, lease.since
                )
            moved = self.write_lease(
                brain,
                name,
                lease,
                lambda s: move_lease(s, name, lease, target, self.now, step.message, changes),
            )
            if moved and step.clear_action:
                world.action = world.action_since = ""
            if moved and step.delete_job:
                self.jobs.pop(step.delete_job, None)
        elif step.kind is StepKind.FINISH:
            if step.cancel_drain:
                brain.drains.pop(name, None)
            if step.delete_job:
                self.jobs.pop(step.delete_job, None)
            self.finish(brain, name, lease, node, step)
        else:
            raise AssertionError(f"{name}: unexpected {step}")

    def finish(
        self, brain: Brain, name: str, lease: NodeLease, node: NodeView | None, step: Step
    ) -> None:
        """Undo our marks, THEN free the slot; the freed slot admits the next node(s)."""
        world = self.nodes[name]
        uncordon = step.uncordon and not lease.was_cordoned
        if node is not None:
            if uncordon:
                world.cordoned = False
                brain.uncordoned.add(name)
            world.marked = ""
            if step.clear_action:
                world.action = world.action_since = ""
        admit = self.admission(brain)
        boot_id = node.boot_id if node is not None else ""

        def edit(state: LockState) -> LockState | None:
            if not finish_lease(
                state,
                name,
                lease,
                self.now,
                step.reason,
                step.message,
                step.succeeded,
                boot_id,
                step.retry_after,
                through=step.through,
            ):
                return None
            admit(state, self.now)
            return state

        self.update_lock(brain, edit)
        brain.forget(name)

    # -- rules -----------------------------------------------------------------------------------

    @initialize(flagged=st.sets(st.sampled_from(NAMES), min_size=1))
    def some_nodes_are_flagged(self, flagged: set[str]) -> None:
        for name in sorted(flagged):
            self.the_detector_flags(name, since_minutes=NAMES.index(name))

    def running_drains(self) -> list[tuple[int, str]]:
        return sorted(
            (which, name)
            for which, brain in enumerate(self.brains)
            for name, task in brain.drains.items()
            if task.outcome.state is DrainState.RUNNING
        )

    @rule(passes=st.integers(1, 3))
    def a_brain_pass(self, passes: int) -> None:
        """The usual passes: brain 0, its node index and lock as they are now."""
        for _ in range(passes):
            self.brain_pass(self.brains[0], fresh_view=True, fresh_lock=True)

    @rule(which=st.integers(0, 1), fresh_view=st.booleans(), fresh_lock=st.booleans())
    def a_pass_maybe_stale(self, which: int, fresh_view: bool, fresh_lock: bool) -> None:
        """Either brain, with the view of the nodes and of the lock it last had, or fresh."""
        self.brain_pass(self.brains[which], fresh_view, fresh_lock)

    @rule(which=st.integers(0, 1))
    def a_brain_crashes(self, which: int) -> None:
        """Everything it knew is lost; the lock and the cluster stay."""
        self.brains[which] = Brain()

    def the_detector_flags(self, name: str, since_minutes: int) -> None:
        node = self.nodes[name]
        if not node.flagged and not node.down:
            node.flagged, node.flagged_since = True, self.now - timedelta(minutes=since_minutes)
            node.flag_boot = node.boot

    @rule(name=st.sampled_from(NAMES), since_minutes=st.integers(0, 30))
    def the_detector(self, name: str, since_minutes: int) -> None:
        """A flag goes once the node rebooted (what needed it is done); else one may come."""
        node = self.nodes[name]
        if node.flagged and node.boot != node.flag_boot:
            node.flagged, node.flagged_since = False, None
        else:
            self.the_detector_flags(name, since_minutes)

    def the_detector_catches_up(self, name: str) -> None:
        node = self.nodes[name]
        if node.flagged and node.boot != node.flag_boot:
            node.flagged, node.flagged_since = False, None

    @rule()
    def the_cluster_moves_on(self) -> None:
        """Every running drain completes, every Job runs, every node down returns (as it
        behaves): progress in one step, between the finer rules below."""
        for which, name in self.running_drains():
            self.brains[which].drains[name].outcome = DrainSeen(
                DrainState.FINISHED, completed=True, message="evicted"
            )
        for job_name in self.running_jobs():
            self.run_job(self.jobs[job_name], succeeds=True)
        for name in NAMES:
            self.a_node_returns(name)

    @precondition(lambda self: bool(self.running_drains()))
    @rule(data=st.data(), completed=st.sampled_from([True, True, True, False]))
    def a_drain_ends(self, data: st.DataObject, completed: bool) -> None:
        which, name = data.draw(st.sampled_from(self.running_drains()))
        self.brains[which].drains[name].outcome = DrainSeen(
            DrainState.FINISHED,
            completed=completed,
            problems=not completed,
            message="evicted" if completed else "a pod refused",
        )

    def running_jobs(self) -> list[str]:
        return sorted(name for name, job in self.jobs.items() if job.state is JobSeen.RUNNING)

    @precondition(lambda self: bool(self.running_jobs()))
    @rule(data=st.data(), outcome=st.sampled_from(["runs", "runs", "runs", "fails"]))
    def a_job_runs(self, data: st.DataObject, outcome: str) -> None:
        job = self.jobs[data.draw(st.sampled_from(self.running_jobs()))]
        self.run_job(job, succeeds=outcome == "runs")

    def run_job(self, job: ModelJob, succeeds: bool) -> None:
        node = self.nodes[job.node]
        if not succeeds or node.down:
            job.state = JobSeen.FAILED
            return
        job.state = JobSeen.SUCCEEDED
        self.reboot(node, job)

    def reboot(self, node: ModelNode, job: ModelJob) -> None:
        """The Job's pod reboots the node, unless it has booted since the Job was made (the
        reboot helper compares the boot IDs: nothing to do, and the Job succeeds)."""
        if job.boot_id != node.boot_id:
            return
        needed = node.flagged and node.flag_boot == node.boot
        if job.attempt == 1 and not needed:  # (a retry: a person's request)
            self.violations.append(
                f"{node.name}: rebooted at boot {node.boot_id}, not flagged since its last reboot"
            )
        # Still Ready in the API until the node controller notices (its grace period).
        node.down, node.rebooting_for = True, job.boot_id

    @precondition(lambda self: any(node.down and node.ready for node in self.nodes.values()))
    @rule(data=st.data())
    def the_node_controller_notices(self, data: st.DataObject) -> None:
        """A node down for its reboot turns NotReady in the API."""
        down = sorted(name for name, node in self.nodes.items() if node.down and node.ready)
        self.the_node_controller_notices_node(data.draw(st.sampled_from(down)))

    def the_node_controller_notices_node(self, name: str) -> None:
        self.nodes[name].ready = False

    @precondition(lambda self: any(node.down for node in self.nodes.values()))
    @rule(data=st.data())
    def a_node_returns_rule(self, data: st.DataObject) -> None:
        down = sorted(name for name, node in self.nodes.items() if node.down)
        self.a_node_returns(data.draw(st.sampled_from(down)))

    def a_node_returns(self, name: str) -> None:
        node = self.nodes[name]
        if node.down and node.behaviour != NEVER_RETURNS:
            node.down, node.ready = False, True
            if node.behaviour != KEEPS_BOOT:  # a reboot: counted for the boot its Job was for
                node.boot += 1
                self.reboots[(name, node.rebooting_for)] += 1

    @rule(
        name=st.sampled_from(NAMES), behaviour=st.sampled_from([RETURNS, NEVER_RETURNS, KEEPS_BOOT])
    )
    def a_node_behaves(self, name: str, behaviour: str) -> None:
        self.nodes[name].behaviour = behaviour

    @rule(data=st.data(), action=st.sampled_from(["retry", "release", "uncordon"]))
    def a_person_acts(self, data: st.DataObject, action: str) -> None:
        """`pitstop retry|release` (the action and the phase start the person saw), or
        `kubectl uncordon`; mostly on a node in maintenance, at whatever phase it is."""
        in_lock = sorted(self.lock.nodes)
        name = data.draw(
            st.sampled_from(in_lock if in_lock and data.draw(st.booleans()) else NAMES)
        )
        node = self.nodes[name]
        if action == "uncordon":
            node.cordoned = False
            return
        lease = self.lock.nodes.get(name)
        node.action = action
        node.action_since = lease.since.isoformat() if lease is not None else ""
        if lease is not None:
            self.person_asked[name] = lease.since

    @rule(minutes=st.sampled_from([1, 4, 11, 16]))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule()
    def the_window_opens_or_closes(self) -> None:
        self.window_open = not self.window_open

    @rule(name=st.sampled_from(NAMES))
    def an_emergency(self, name: str) -> None:
        self.nodes[name].emergency = True

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def nothing_unsafe_happened(self) -> None:
        assert not self.violations, self.violations

    @invariant()
    def the_budget_holds(self) -> None:
        holders = [name for name, lease in self.lock.nodes.items() if lease.phase in IN_MAINTENANCE]
        assert len(holders) <= WINDOW_LIMIT, f"{holders} in maintenance, limit {WINDOW_LIMIT}"
        per_domain = Counter(ZONES[name] for name in holders)
        for domain, count in per_domain.items():
            assert count <= DOMAIN_LIMIT, f"zone {domain}: {holders} in maintenance"

    @invariant()
    def at_most_one_reboot_per_node_and_boot(self) -> None:
        twice = {key: count for key, count in self.reboots.items() if count > 1}
        assert not twice, f"rebooted more than once for the same boot: {twice}"

    @invariant()
    def every_phase_is_known(self) -> None:
        for lease in self.lock.nodes.values():
            assert lease.phase in IN_MAINTENANCE

    def teardown(self) -> None:
        """Run to quiescence: window open, every node returning, nobody acting."""
        self.window_open = True
        for node in self.nodes.values():
            node.behaviour = RETURNS
            node.action = node.action_since = ""
        for _ in range(40):
            transient = [
                name for name, lease in self.lock.nodes.items() if lease.phase is not Phase.FAILED
            ]
            if not transient and not any(self.plan_starts()):
                break
            self.now += timedelta(minutes=11)
            for brain in self.brains:
                for task in brain.drains.values():
                    if task.outcome.state is DrainState.RUNNING:
                        task.outcome = DrainSeen(DrainState.FINISHED, completed=True)
            for job in self.jobs.values():
                node = self.nodes[job.node]
                if job.state is JobSeen.RUNNING and not node.down:
                    job.state = JobSeen.SUCCEEDED
                    self.reboot(node, job)
            for name in NAMES:
                self.a_node_returns(name)
                self.the_detector_catches_up(name)
            self.brain_pass(self.brains[0], fresh_view=True, fresh_lock=True)
            self.nothing_unsafe_happened()
            self.the_budget_holds()
            self.at_most_one_reboot_per_node_and_boot()
        stuck = {
            name: lease.phase
            for name, lease in self.lock.nodes.items()
            if lease.phase is not Phase.FAILED
        }
        assert not stuck, f"left in the middle of their maintenance: {stuck}"
        assert not any(self.plan_starts()), "nodes that may start were never started"

    def plan_starts(self) -> list[str]:
        nodes = [node.view() for node in self.nodes.values()]
        plan = make_plan([NamedWindow(WINDOW, self.spec)], nodes, self.lock, self.now)
        return [start.node for start in plan.window(WINDOW).starts]


RolloutModel.TestCase.settings = settings.get_profile("rollout-model")
TestRolloutModel = RolloutModel.TestCase


# -- a person acting while the node is down for its reboot ---------------------------------------


def drained_and_rebooting(model: RolloutModel, name: str) -> ModelJob:
    """Passes until the node's drain runs, the drain ends, passes until its Job exists."""
    model.a_brain_pass(3)
    model.brains[0].drains[name].outcome = DrainSeen(DrainState.FINISHED, completed=True)
    model.a_brain_pass(3)
    (job,) = (job for job in model.jobs.values() if job.state is JobSeen.RUNNING)
    return job


def person_acts(model: RolloutModel, name: str, action: str) -> None:
    lease = model.lock.nodes[name]
    model.nodes[name].action, model.nodes[name].action_since = action, lease.since.isoformat()
    model.person_asked[name] = lease.since


@pytest.mark.parametrize("action", ["retry", "release"])
def test_a_job_made_for_the_boot_a_node_is_leaving_does_not_reboot_it_again(action: str) -> None:
    """A retry (of a node Failed while down) or a release mid-reboot: the next maintenance
    makes its Job while the node still shows the boot it is leaving; once the node is back at
    its new boot, that Job must not reboot it again (hypothesis rarely finds this path)."""
    model = RolloutModel()
    node = model.nodes["n0"]
    model.the_detector_flags("n0", since_minutes=0)
    first = drained_and_rebooting(model, "n0")
    if action == "retry":
        node.behaviour = NEVER_RETURNS
    model.run_job(first, succeeds=True)
    assert node.down and node.boot == 0
    if action == "retry":
        model.the_node_controller_notices_node("n0")
        model.time_passes(16)  # nodeReturnTimeout: Failed
        model.a_brain_pass(3)
        assert model.lock.nodes["n0"].phase is Phase.FAILED
    person_acts(model, "n0", action)
    model.a_brain_pass(1)
    if action == "release":
        model.time_passes(11)  # the rest after a release before the reboot was seen
    second = drained_and_rebooting(model, "n0")
    assert second is not first and second.boot_id == "n0-boot-0" and node.down
    node.behaviour = RETURNS
    model.a_node_returns("n0")
    model.run_job(second, succeeds=True)
    assert not node.down and second.state is JobSeen.SUCCEEDED  # nothing to do
    model.at_most_one_reboot_per_node_and_boot()
    model.nothing_unsafe_happened()
    model.teardown()
    assert model.reboots == Counter({("n0", "n0-boot-0"): 1})
