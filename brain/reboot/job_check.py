"""Would the API server create this window's reboot Job? Asked before any node is touched.

The CRD and pydantic check the shape of `reboot.jobTemplate` (the parts Pitstop reads, and
containers with a name and an image), but only the API server knows the rest: every other
PodSpec field, the Job admission policy the chart installs (which allows only the configured
methods and no custom template), RBAC. Without asking, such a window had a node cordoned and
drained, then stuck in Rebooting with the same refusal on every pass.

So the brain asks with a server-side dry run of the Job the window would create (nothing is
stored, admission runs as for a real create). A refusal (400, 403, 404, 422) makes the window
invalid, like a spec that does not parse: Ready False with the API server's message and an
InvalidSpec Event, and no node is admitted. The verdict is remembered per window and Job
shape: asked when a window's Job shape is first seen (a new window, a changed spec), and again
only when a node is about to be admitted and the verdict is older than a few minutes (a policy
may have changed meanwhile). A pass costs no request, and an idle brain asks nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes.client.exceptions import ApiException

from brain.core.window import WindowSpec
from brain.kube import Kube
from brain.reboot import reboot_job
from brain.settings import BrainSettings

log = logging.getLogger("pitstop.job_check")
RECHECK_SECONDS = 300.0
# The node and boot ID of the dry-run Job: any will do, nothing is created or scheduled.
DRY_RUN_NODE = "pitstop-dry-run"
DRY_RUN_BOOT_ID = "dry-run"
# The answers that say "this Job cannot be created", as opposed to an API server in trouble.
REFUSALS = (400, 403, 404, 422)


def _refusal_message(error: ApiException) -> str:
    try:
        message = str(json.loads(error.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    return f"{error.status} {error.reason}" + (f": {message}" if message else "")


@dataclass
class RebootJobCheck:
    kube: Kube
    settings: BrainSettings
    recheck_seconds: float = RECHECK_SECONDS
    clock: Callable[[], float] = time.monotonic
    # window -> (its Job's shape, when asked, the verdict)
    _verdicts: dict[str, tuple[str, float, str | None]] = field(default_factory=dict)

    def job(self, window: str, spec: WindowSpec) -> dict[str, object]:
        """The Job the window would create for a node, built as the Rebooting step builds it."""
        return reboot_job.build_reboot_job(
            DRY_RUN_NODE,
            DRY_RUN_BOOT_ID,
            spec.reboot.method,
            self.settings.job_namespace,
            self.settings.job_image,
            window,
            job_template=spec.reboot.job_template,
            host_agent_directory=self.settings.host_agent_directory,
        )

    async def __call__(self, window: str, spec: WindowSpec, admitting: bool = False) -> str | None:
        """Why the window's reboot Job would be refused, or None (also when the API server
        could not answer: the Rebooting step meets the same trouble and retries).

        Asks the API server for a Job shape not seen yet for this window, or, when `admitting`
        (a node is about to be admitted), for a verdict older than `recheck_seconds`;
        otherwise answers what it was told, however old."""
        job = self.job(window, spec)
        key = json.dumps(job, sort_keys=True)
        known = self._verdicts.get(window)
        fresh = known is not None and self.clock() - known[1] < self.recheck_seconds
        if known is not None and known[0] == key and (fresh or not admitting):
            return known[2]
        try:
            await self.kube.create(
                f"/apis/batch/v1/namespaces/{self.settings.job_namespace}/jobs",
                job,
                query={"dryRun": "All"},
            )
            verdict = None
        except ApiException as error:
            if error.status not in REFUSALS:
                log.warning("window %s: the reboot Job dry run failed: %s", window, error.reason)
                return None
            source = (
                "its jobTemplate"
                if spec.reboot.job_template is not None
                else f"the {spec.reboot.method} method"
            )
            verdict = (
                f"the API server refuses the reboot Job this window would create ({source},"
                f" a dry run): {_refusal_message(error)}"
            )
        self._verdicts[window] = (key, self.clock(), verdict)
        return verdict
