"""Chat text is neutral: what others wrote cannot ping or hide a link.

A notification's one-line `text` quotes a commit's subject and author (whoever can push to an
app repository), the failing line of a build's output and a health check's detail (the
server). Before the fix they reached Discord and Mattermost as written, so a commit subject
like `@everyone [Approve the hotfix](https://evil.example/login)` made the trusted deployment
bot ping a whole server with a link whose target the reader cannot see.

Each test builds the events the daemon builds (announce.fields + announce.payload) from hostile
rows and delivers them through the real `webhooks.send_chat` and the real apprise plugin. Only
requests' transport is replaced (`HTTPAdapter.send`, under every requests call apprise makes):
it records the prepared request (URL, body) and answers 200, so nothing leaves the machine. The
assertions read what the service would parse: the POSTed JSON, with the service's own escaping
undone (HTML entities for Slack and Telegram, backslashes for the Markdown that apprise sends
to Teams and Rocket.Chat, both for Google Chat): an escape that apprise happens to apply for
one service does not count as ours.

`msteams://` is gone from apprise 2.x: MS Teams is `workflow://` (Power Automate Workflows).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from reconciler.service import announce, webhooks
from reconciler.service.announce import Scene, fields, payload

SHOP = "shop.example.com"
AT = "2026-12-06T00:00:00Z"
ZWSP = "\u200b"  # what follows every @ in the text: Discord's own way to write "@everyone" unpinged
# Each is one commit subject, author, build line and health detail at once.
HOSTILE = [
    "@everyone [Approve the hotfix](https://evil.example/login)",
    "@here @channel @all <!here> <!channel> <!everyone>",
    "<@U0123ABCD> <@123456789> <@&456> @**all** <at>everyone</at> <users/all>",
    "<https://evil.example/login|Dashboard> ![pixel](https://evil.example/p.png)",
]


def _events(hostile: str) -> list[dict[str, Any]]:
    """deployed, failed and degraded events carrying `hostile` in every untrusted field."""
    live = {"id": 7, "release": "31072025-143022", "commit_sha": "a" * 40, "status": "success",
            "commit_subject": hostile, "commit_author": f"{hostile} <mallory@evil.example>", "duration_ms": 4000,
            "trigger": "redeploy", "requested_by": hostile}
    # The build's last traced line (building._failing_line) and a health detail: server output.
    broken = {**live, "id": 9, "release": "01082025-091245", "commit_sha": "b" * 40, "status": "failed",
              "exit_status": 1, "trigger": "app commit", "message": f"deploy script failed (exit 1) at: echo {hostile}"}
    deployed = Scene(SHOP, "web-1", "Synced", "Healthy", "", live["release"], live["commit_sha"], live=live,
                     previous=("30072025-101010", "c" * 40), endpoint="http://127.0.0.1:9180")
    failed = Scene(SHOP, "web-1", "Failed", "Healthy", broken["message"], live["release"], live["commit_sha"],
                   live=live)
    degraded = Scene(SHOP, "web-1", "Synced", "Degraded", f"health check failed: {hostile}", live["release"],
                     live["commit_sha"], live=live)
    return [payload("deployed", SHOP, AT, **fields("deployed", deployed)),
            payload("failed", SHOP, AT, **fields("failed", failed, broken, broken["commit_sha"])),
            payload("degraded", SHOP, AT, **fields("degraded", degraded))]


def _letters(text: str) -> str:
    return re.sub(r"[^A-Za-z]", "", text)


@dataclass
class Posted:
    url: str
    body: bytes


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Posted]]:
    """Every request apprise makes, recorded and answered 200 here: nothing leaves the machine."""
    posted: list[Posted] = []

    def send(self: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = request.body or b""
        posted.append(Posted(str(request.url), body.encode() if isinstance(body, str) else bytes(body)))
        response = requests.Response()
        response.status_code = 200
        # Slack's incoming webhooks answer the bare word; everyone else gets a JSON object.
        response._content = b"ok" if urlsplit(str(request.url)).hostname == "hooks.slack.com" else b'{"ok": true}'
        response.headers["Content-Type"] = "application/json"
        response.url, response.request = str(request.url), request
        return response

    monkeypatch.setattr(HTTPAdapter, "send", send)
    yield posted


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return dict(parse_qsl(body.decode()))  # a form post


def _live_markup(text: str) -> list[str]:
    """What a chat service would act on in `text`: an @ it may read as a mention (any @ not
    followed by the zero-width space), any angle bracket (Slack/Mattermost `<!here>`,
    `<url|label>`, Discord `<@id>`, Teams `<at>`, Google Chat `<users/all>`), a masked link `](`."""
    found = [text[m.start():m.start() + 12] for m in re.finditer(f"@(?!{ZWSP})", text)]
    found += [text[m.start():m.start() + 20] for m in re.finditer(r"[<>]|\]\(", text)]
    return found


def _unbackslash(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


# (apprise URL, how the service reads the text apprise sends it)
TARGETS = {
    "slack": ("slack://T1234ABCD/B1234ABCD/abcdefghijklmnopqrstuvwx", html.unescape),
    "discord": ("discord://123456789/abcdefghijklmnop", str),
    "mattermost": ("mmost://chat.example.com/tokentokentokentokentoken", str),
    "teams": ("workflow://prod.westus.logic.azure.com:443/workflowid/signaturesignature", _unbackslash),
    "rocketchat": ("rocket://webhookid/webhooktoken@chat.example.com/#ops", _unbackslash),
    "zulip": ("zulip://bot@example.zulipchat.com/tokentokentokentokentokentokenab", str),
    "googlechat": ("gchat://workspace/key/token", lambda text: html.unescape(_unbackslash(text))),
    "telegram": ("tgram://123456789:abcdefg_hijklmnop/12315544/", html.unescape),
}


@pytest.mark.parametrize("service", sorted(TARGETS))
def test_no_mention_or_masked_link_reaches_the_service(service: str, wire: list[Posted]) -> None:
    url, reads = TARGETS[service]
    for hostile in HOSTILE:
        for event in _events(hostile):
            wire.clear()
            assert webhooks.send_chat(url, event["text"], event["event"]), f"{service}: apprise did not deliver"
            assert wire, f"{service}: nothing was posted"
            texts = [reads(s) for post in wire for s in _strings(_decoded(post.body))]
            ours = [t for t in texts if SHOP in t]
            assert ours, f"{service}: the summary is not in {texts}"
            for text in texts:
                assert not _live_markup(text), (service, event["event"], _live_markup(text), text)
            # Neutral, not censored: the reader still sees every word that was written.
            assert _letters(hostile) in _letters(" ".join(ours)), (service, hostile, ours)
            assert all(urlsplit(post.url).hostname != "evil.example" for post in wire)


def test_the_json_events_text_is_neutral_and_its_fields_keep_what_was_written() -> None:
    """The http(s) webhook carries the same `text`; the fields stay data, as written."""
    for hostile in HOSTILE:
        events = _events(hostile)
        for event in events:
            assert not _live_markup(event["text"]), event["text"]
            assert len(event["text"]) <= 1000
        assert events[1]["commit_subject"] == hostile
        assert events[1]["commit_author"] == f"{hostile} <mallory@evil.example>"


def test_neutral_is_idempotent_and_leaves_plain_text_alone() -> None:
    for hostile in HOSTILE:
        once = announce.neutral(hostile)
        assert announce.neutral(once) == once
    plain = 'shop.example.com deployed on web-1: 01082025-091245 (bbbbbbbbbbbb) "Fix checkout (again)" by Jane'
    assert announce.neutral(plain) == plain
