"""What the brain reads from a Node: here, the control plane's not-ready taints."""

from __future__ import annotations

from brain.core.node_view import node_view_from_object


def test_the_control_plane_not_ready_taints_are_named_once_by_key_whatever_their_effects() -> None:
    node = node_view_from_object(
        {
            "metadata": {"name": "n1"},
            "spec": {
                "taints": [
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                    {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"},
                    {
                        "key": "node.kubernetes.io/not-ready",
                        "effect": "NoExecute",
                        "timeAdded": "2026-01-01T00:00:00Z",
                    },
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                    {"key": "pitstop.dev/reboot-pending", "effect": "PreferNoSchedule"},
                ]
            },
        }
    )
    assert node.not_ready_taint_keys == (
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    )
    assert node_view_from_object({"metadata": {"name": "n2"}}).not_ready_taint_keys == ()
