"""Notification templates: checked when a window parses, rendered by the brain's formatter,
delivered through a real apprise URL (json://) to a loopback endpoint, and previewed."""

from __future__ import annotations

import pytest

from brain.core.window import MESSAGE_TEMPLATE, WindowSpecError, parse_window_spec
from brain.integrations.notify import MessageTemplates, Notifier, NotifyTarget, format_message
from pitstopctl.notify_preview import render_preview
from tests.brain.loopback import Reply, loopback_server


def notify(**templates: str) -> dict[str, object]:
    return {"notify": {"secretRef": {"name": "apprise"}, **templates}}


@pytest.mark.parametrize(
    "template",
    ["$nodename is back", "${phase", "cost: $5", "$Node", "$message and $secret"],
)
def test_a_template_with_an_unknown_or_broken_placeholder_makes_the_window_invalid(
    template: str,
) -> None:
    with pytest.raises(WindowSpecError) as error:
        parse_window_spec(notify(body=template), "w")
    assert MESSAGE_TEMPLATE in str(error.value) and "spec.notify.body" in str(error.value)


def test_known_placeholders_and_a_dollar_sign_are_accepted() -> None:
    spec = parse_window_spec(notify(title="[$cluster] $event", body="${node}: $$5 $reason"))
    assert spec.notify is not None and spec.notify.title == "[$cluster] $event"


def test_templates_replace_the_built_in_title_and_body() -> None:
    templates = MessageTemplates(
        "[$cluster] $event: $node", "$window/$phase: $reason - $message", "prod-eu"
    )
    message = format_message(
        "Succeeded", "weekend", "node-7", "Done", "Rebooted", "back and healthy", templates
    )
    assert message.title == "[prod-eu] Succeeded: node-7"
    assert message.body == "weekend/Done: Rebooted - back and healthy"
    # Without a body template, the built-in body (reason and message on one line).
    built_in = format_message(
        "Succeeded", "weekend", "node-7", "Done", "Rebooted", "back", MessageTemplates(title="t")
    )
    assert built_in.title == "t" and "Reason: Rebooted: back" in built_in.body


def test_a_rendered_template_is_delivered_to_an_apprise_url() -> None:
    with loopback_server(Reply(status=200)) as server:
        notifier = Notifier(
            [NotifyTarget(f"json://127.0.0.1:{server.port}/hook")],
            ["Failed"],
            templates=MessageTemplates("$cluster: $node $event", "$reason ($message)", "lab"),
        )
        assert notifier.send("Failed", "w", "node-3", "Failed", "NodeReturnTimeout", "gone 15m")
        (request,) = server.wait_for_requests(1)
        notifier.close()
    body = request.json()
    assert body["title"] == "lab: node-3 Failed"
    assert body["message"] == "NodeReturnTimeout (gone 15m)"


def test_the_preview_renders_each_selected_event() -> None:
    spec = parse_window_spec(
        {
            "notify": {
                "secretRef": {"name": "apprise"},
                "events": ["Started", "RolloutComplete"],
                "title": "[$cluster] $event $node",
            }
        }
    )
    text = render_preview({"w": spec, "quiet": parse_window_spec({})}, "prod", {"w": ["n-1"]})
    assert "Notifications of window w (events Started, RolloutComplete; cluster 'prod'):" in text
    assert "title: [prod] Started n-1" in text
    assert "title: [prod] RolloutComplete \n" in text or "title: [prod] RolloutComplete\n" in text
    assert "quiet" not in text
