"""What the brain checks once before it starts its operator: can it do its job at all?

Without these reads succeeding kopf would log the same failure in a loop (or wait forever for
a CRD); a person reads one line on stderr instead: no kubeconfig, the API server unreachable,
a denied request (naming verb and resource), the CRD not installed.

An unreadable lock is different: the brain starts anyway and says so in one line, because only
a running brain can tell every window (Degraded LockUnreadable) and resume once a person fixes
the data; a brain that exited would crash-loop and leave the windows' status saying nothing.
"""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from brain.cluster_failures import CRD_MISSING, CommandError, describe
from brain.core.api import GROUP, PLURAL, VERSION
from brain.core.lock_state import LOCK_DATA_KEY, LockState
from brain.kube import JsonApi, make_api_client
from brain.settings import BrainSettings

PROBE_TIMEOUT_SECONDS = 15


def check_cluster(settings: BrainSettings) -> str | None:
    """Raise (ConfigException, ApiException, urllib3 errors, CommandError) what would stop us;
    return a one-line warning for what the running brain handles itself (an unreadable lock)."""
    api_client = make_api_client()
    try:
        api = JsonApi(api_client)
        api.get("/api/v1/nodes", {"limit": 1}, timeout=PROBE_TIMEOUT_SECONDS)
        try:
            api.get(
                f"/apis/{GROUP}/{VERSION}/{PLURAL}", {"limit": 1}, timeout=PROBE_TIMEOUT_SECONDS
            )
        except ApiException as error:
            if error.status == 404:
                raise CommandError(CRD_MISSING) from error
            raise
        try:
            lock = api.get(
                f"/api/v1/namespaces/{settings.namespace}/configmaps/{settings.lock_name}",
                timeout=PROBE_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            if error.status != 404:  # no lock yet: the first write creates it
                raise
        else:
            try:
                LockState.from_json((lock.get("data") or {}).get(LOCK_DATA_KEY))
            except Exception as error:
                described = describe(error)
                if described is None:
                    raise
                return f"{described[0]}; starting anyway: every window shows Degraded " + (
                    "LockUnreadable until the data is fixed"
                )
        return None
    finally:
        api_client.close()
