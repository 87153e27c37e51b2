"""The node contract: every label, annotation and taint name Pitstop reads or writes on Nodes.

The detector writes the `reboot-required` label and annotations; the brain reads them and owns
the rest. Both import this module, so a name is changed in one place. Imports nothing heavy:
the detector's memory budget depends on it.
"""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "pitstop.dev"

# Written by the detector (only these, enforced by its ValidatingAdmissionPolicy).
REBOOT_REQUIRED_LABEL: Final = f"{DOMAIN}/reboot-required"
REBOOT_REQUIRED_VALUE: Final = "true"
REBOOT_REQUIRED_SINCE_ANNOTATION: Final = f"{DOMAIN}/reboot-required-since"
# How far reboot-required-since may lie before the Node's creation or after now (clock skew
# between a node and the control plane). The detector's policy refuses a value before the
# creation; the brain ignores one outside [creation, now] widened by this (CEL has no now()).
REBOOT_REQUIRED_SINCE_SKEW_SECONDS: Final = 300
REBOOT_REASON_ANNOTATION: Final = f"{DOMAIN}/reboot-reason"
REBOOT_REASON_MAX_BYTES: Final = 1024
DETECTOR_OWNED_PREFIX: Final = f"{DOMAIN}/reboot-"

# kured's own annotations, written only when kured compatibility is switched on.
KURED_REBOOT_NEEDED_ANNOTATION: Final = "weave.works/kured-most-recent-reboot-needed"
KURED_REBOOT_IN_PROGRESS_ANNOTATION: Final = "weave.works/kured-reboot-in-progress"

# Set by people (or their automation) and read by the brain.
PRIORITY_ANNOTATION: Final = f"{DOMAIN}/priority"
EMERGENCY_ANNOTATION: Final = f"{DOMAIN}/emergency"
EMERGENCY_VALUE: Final = "true"
# `pitstop retry NODE` / `pitstop release NODE` write these; the brain acts (or refuses, with an
# Event) and removes them. ACTION_SINCE is the start of the phase the person saw (the lock's
# `since`): an action asked for an earlier phase is stale and ignored, never replayed later.
ACTION_ANNOTATION: Final = f"{DOMAIN}/action"
ACTION_SINCE_ANNOTATION: Final = f"{DOMAIN}/action-since"
ACTION_RETRY: Final = "retry"
ACTION_RELEASE: Final = "release"

# Written by the brain while a node is in its care, removed when it is done. (The phase itself
# is in the window's status and Events; PHASE_ANNOTATION is reserved and denied to the detector.)
PHASE_ANNOTATION: Final = f"{DOMAIN}/phase"
WINDOW_ANNOTATION: Final = f"{DOMAIN}/window"
PENDING_TAINT_KEY: Final = f"{DOMAIN}/reboot-pending"
PENDING_TAINT_EFFECT: Final = "PreferNoSchedule"

# Labels of the reboot Jobs (and their pods) the brain creates.
JOB_NODE_LABEL: Final = f"{DOMAIN}/node"
JOB_BOOT_ID_LABEL: Final = f"{DOMAIN}/boot-id"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "pitstop"

# The Node condition Pitstop reads for readiness.
READY_CONDITION: Final = "Ready"
# Taints the control plane's node lifecycle controller keeps on a node it does not see as
# healthy: NoSchedule follows the Ready condition at once, NoExecute only on the controller's
# periodic pass (every 5 s by default), so a node back and Ready still carries it for a while.
# The health gate waits until a rebooted node carries neither key, with any effect.
NOT_READY_TAINT_KEY: Final = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT_KEY: Final = "node.kubernetes.io/unreachable"
CONTROL_PLANE_NOT_READY_TAINT_KEYS: Final = (NOT_READY_TAINT_KEY, UNREACHABLE_TAINT_KEY)
