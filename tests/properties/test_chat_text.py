"""announce.summary: whatever a commit subject, an author, a build line or a health detail holds,
the one-line `text` has no live chat markup (payloads per service in
tests/hostile/test_chat_text.py)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import NotifyEvent
from reconciler.service.announce import TEXT_MAX, payload
from tests.properties.strategies import FAST, nasty_text

MARKUP = ["@", "@everyone", "@here", "<", ">", "<!channel>", "<@U1>", "[", "]", "(", ")", "](", "[a](http://x)",
          "\u200b", "*", "|", "&lt;", "\\", "@\u200b"]
chat_text = st.lists(st.one_of(nasty_text, st.sampled_from(MARKUP)), max_size=12).map("".join)


@FAST
@given(chat_text, chat_text, chat_text, st.sampled_from(list(NotifyEvent)))
def test_the_summary_never_carries_a_mention_an_angle_bracket_or_a_masked_link(
        subject: str, author: str, reason: str, event: NotifyEvent) -> None:
    body = payload(event, "shop.example.com", "2026-12-06T00:00:00Z", server="web-1", release="01082025-091245",
                   commit="b" * 40, commit_subject=subject, commit_author=author, message=reason, reason=reason,
                   trigger=subject, requested_by=author, dashboard_url="http://127.0.0.1:9180/")
    text = body["text"]
    assert not re.search("@(?!\u200b)|[<>]|\\]\\(", text), text
    assert "\n" not in text and len(text) <= TEXT_MAX
