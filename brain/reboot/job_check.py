"""Would the API server create this window's reboot Job? Asked before any node is touched.

The CRD and pydantic check the shape of `reboot.jobTemplate` (the parts Pitstop reads, and
containers with a name and an image), but only the API server knows the rest: every other
PodSpec field, the Job admission policy the chart installs (which allows only the configured
methods and no custom template), RBAC. Without asking, such a window had a node cordoned and
drained, then stuck in Rebooting with the same refusal on every pass.

So the brain asks with a server-side dry run of the Job the window would create (nothing is
stored, admission runs as for a real create). A refusal (400, 403, 404, 422) makes the window
invalid, like a spec that does not parse: Ready False with the API server's message and an
InvalidSpec Event, and no node is admitted. The verdict is remembered per Job shape for a few
minutes, so a pass costs no request and a change of the policy is seen soon after.
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
    _verdicts: dict[str, tuple[float, str | None]] = field(default_factory=dict)

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

    async def __call__(self, window: str, spec: WindowSpec) -> str | None:
        """Why the window's reboot Job would be refused, or None (also when the API server
        could not answer: the Rebooting step meets the same trouble and retries)."""
        job = self.job(window, spec)
        key = json.dumps(job, sort_keys=True)
        known = self._verdicts.get(key)
        if known is not None and self.clock() - known[0] < self.recheck_seconds:
            return known[1]
        try:
            await self.kube.call(
                self.kube.batch.create_namespaced_job,
                self.settings.job_namespace,
                job,
                dry_run="All",
                _preload_content=False,
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
        self._verdicts = {
            cached: value
            for cached, value in self._verdicts.items()
            if self.clock() - value[0] < self.recheck_seconds
        }
        self._verdicts[key] = (self.clock(), verdict)
        return verdict
