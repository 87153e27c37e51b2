"""`pitstop plan --notify-preview`: each window's notifications rendered with sample values, so a
template (`notify.title` / `notify.body`) is seen before a real reboot sends it.

Pure: the same `format_message` as the brain, fed one sample transition per selected event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from brain.core.window import WindowSpec
from brain.integrations.notify import MessageTemplates, format_message

# event -> (has a node, phase, reason, message): what the brain sends for it, as an example.
SAMPLES: Mapping[str, tuple[bool, str, str, str]] = {
    "Started": (
        True,
        "Draining",
        "Started",
        "maintenance started (window open): cordoning and draining",
    ),
    "Succeeded": (True, "Done", "Rebooted", "rebooted, back and healthy"),
    "Failed": (True, "Failed", "NodeReturnTimeout", "the node did not come back within 15m"),
    "Blocked": (False, "", "Blocked", "PrometheusAlerts: NodeDiskFull"),
    "Conflict": (False, "", "Conflict", "node-1 is also selected by another window"),
    "WindowOpened": (False, "", "WindowOpened", "the schedule is open"),
    "RolloutComplete": (False, "", "RolloutComplete", "every flagged node was handled"),
}


def render_preview(
    specs: Mapping[str, WindowSpec],
    cluster: str,
    sample_nodes: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Every window with notifications: one rendered title and body per selected event."""
    lines: list[str] = []
    for name, spec in sorted(specs.items()):
        if spec.notify is None:
            continue
        governed = (sample_nodes or {}).get(name) or ["node-1"]
        templates = MessageTemplates(spec.notify.title, spec.notify.body, cluster)
        events = ", ".join(str(event) for event in spec.notify.events)
        lines.append(f"Notifications of window {name} (events {events}; cluster {cluster!r}):")
        for event in spec.notify.events:
            has_node, phase, reason, message = SAMPLES[str(event)]
            rendered = format_message(
                str(event),
                name,
                governed[0] if has_node else None,
                phase or None,
                reason,
                message,
                templates,
            )
            lines.append(f"  {event}:")
            lines.append(f"    title: {rendered.title}")
            body = rendered.body.splitlines() or [""]
            lines.append(f"    body:  {body[0]}")
            lines.extend(f"           {line}" for line in body[1:])
        lines.append("")
    if not lines:
        return "No window sends notifications.\n"
    return "\n".join(lines).rstrip() + "\n"
