"""The typed vocabularies at the edges: notification events (config.NotifyEvent)
and the reasons history gives for a build or a switch (core.reasons).

Their values are the contract's strings, written out here once more on purpose: renaming a member's
value would change stored rows, the JSON of `history` and notifications, and every operator's
`[[notify]] events`, so it must fail a test. That a misspelt member is rejected is mypy's job
(`mypy --strict reconciler`); what is checked here is that the functions at the edges are declared
with the enums, not `str`, and that a wrong name written by a person or at run time is refused.
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from reconciler.config import NOTIFY_EVENTS, NotifyEvent, NotifyTarget, validate_settings
from reconciler.core.plan import Activate, Deploy
from reconciler.core.reasons import DeployReason, RequestKind, SwitchReason
from reconciler.engine import apply, building, switching
from reconciler.engine.store import Store
from reconciler.errors import ConfigError
from reconciler.service import announce, webhooks

NOTIFY_DOCS = Path(__file__).resolve().parents[2] / "docs" / "guide" / "http.md"


def test_notify_events_are_the_contracts_four_and_reachability() -> None:
    assert [e.value for e in NotifyEvent] == ["deployed", "failed", "rolled_back", "degraded", "unreachable",
                                              "recovered"]
    assert tuple(NotifyEvent) == NOTIFY_EVENTS  # the default of `events`: all of them


def test_history_reasons_are_the_stored_strings() -> None:
    assert {r.value for r in DeployReason} == {"first deploy", "app commit", "tag moved", "declaration", "deploy"}
    assert {k.value for k in RequestKind} == {"retry", "redeploy", "override-window"}
    assert {r.value for r in SwitchReason} == {"rollback", "roll-forward", "activate", "auto-rollback", "unpin",
                                               "drift", "deploy", "retry"}


SENTENCES = {NotifyEvent.DEPLOYED: "shop.example.com deployed: ", NotifyEvent.FAILED: "shop.example.com FAILED: ",
             NotifyEvent.ROLLED_BACK: "shop.example.com rolled back: ",
             NotifyEvent.DEGRADED: "shop.example.com DEGRADED: ",
             NotifyEvent.UNREACHABLE: "shop.example.com UNREACHABLE: ",
             NotifyEvent.RECOVERED: "shop.example.com recovered: "}


@pytest.mark.parametrize("event", list(NotifyEvent))
def test_every_event_has_a_chat_type_a_sentence_and_a_documented_line(event: NotifyEvent) -> None:
    assert event in webhooks.NOTIFY_TYPES
    body = announce.payload(event, "shop.example.com", "2026-01-01T00:00:00Z", release="01012026-000000",
                            commit="a" * 40, message="why")
    assert body["event"] is event and body["text"].startswith(SENTENCES[event]), body
    docs = NOTIFY_DOCS.read_text()
    assert f"`{event.value}`" in docs or f'"{event.value}"' in docs


def test_a_payload_for_an_unknown_event_is_refused_at_run_time() -> None:
    with pytest.raises(ValueError, match="deploy"):
        announce.payload("deploy", "shop.example.com", "2026-01-01T00:00:00Z")  # type: ignore[arg-type]


def test_notify_events_in_the_config_become_members() -> None:
    target = NotifyTarget(url="http://127.0.0.1:9/hook", events=["failed", "degraded"])  # type: ignore[list-item]
    assert target.events == [NotifyEvent.FAILED, NotifyEvent.DEGRADED]
    assert all(type(e) is NotifyEvent for e in target.events)
    assert NotifyTarget(url="http://127.0.0.1:9/hook").events == list(NotifyEvent)


@pytest.mark.parametrize("events", [["deploy"], ["failed", "rolledback"], ["Failed"], [1], "failed"])
def test_an_unknown_notify_event_is_a_config_error_naming_the_known_ones(tmp_path: Path, events: object) -> None:
    raw = {"repo": str(tmp_path), "notify": [{"url": "http://127.0.0.1:9/hook", "events": events}]}
    with pytest.raises(ConfigError) as caught:
        validate_settings(raw, tmp_path / "reconciler.toml")
    message = str(caught.value)
    assert "notify.0.events" in message, message
    if isinstance(events, list):
        assert all(f"'{e.value}'" in message for e in NotifyEvent), message


@pytest.mark.parametrize(("function", "parameter", "expected"), [
    (webhooks.Notifications.emit, "event", NotifyEvent),
    (webhooks.Notifications.wanted, "event", NotifyEvent),
    (webhooks.send_chat, "event", NotifyEvent),
    (announce.fields, "event", NotifyEvent),
    (announce.payload, "event", NotifyEvent),
    (Store.record_activation, "trigger", SwitchReason),
    (Store.request, "kind", RequestKind),
    (switching.after_switch, "why", SwitchReason),
    (building.deploy, "reason", DeployReason | None),
])
def test_the_edges_take_the_enum_not_str(function: typing.Callable[..., object], parameter: str,
                                         expected: object) -> None:
    assert typing.get_type_hints(function)[parameter] == expected


def test_planned_actions_carry_members() -> None:
    hints = typing.get_type_hints(Activate)
    assert hints["reason"] is SwitchReason
    assert typing.get_type_hints(Deploy)["reason"] == DeployReason | None
    assert typing.get_type_hints(apply.SiteContext)["trigger"] == RequestKind | None
    # The many-server dry run names the servers without putting them into the reason.
    assert Activate("01012026-000000", SwitchReason.DEPLOY, ("web-1", "web-2")).describe() == \
        "activate release 01012026-000000 (deploy on web-1, web-2)"
