"""reconciler.core.manifest: the record a release carries. It is written as compact sorted JSON
(`once` only where a site has a run-once step, so other manifests stay as they always were) and
read strictly: each field that is not what we write is refused with its reason, a deployment's
`pending` never passes as a release status, text that may reach a terminal is escaped, and the
commit's author and subject are bounded. (Any text, read or written: tests/properties/
test_server_records.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler.core import wire
from reconciler.core.manifest import Manifest

SHA = "0123456789abcdef" * 2 + "01234567"
GOOD: dict[str, Any] = {"commit": SHA, "branch": "main", "repository": "/srv/git/shop.git",
                        "build_key": "0123456789abcdef", "status": "success"}


def text(**changes: Any) -> str:
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not None})


def test_a_manifest_is_written_compact_and_sorted_with_once_only_when_it_says_something() -> None:
    manifest = Manifest(SHA, "main", "/srv/git/shop.git", "0123456789abcdef", "updating", message="m")
    written = manifest.to_json()
    assert " " not in written and "once" not in written
    assert list(json.loads(written)) == sorted(json.loads(written))
    assert Manifest.parse(written) == manifest
    owed = Manifest(SHA, "main", "/srv/git/shop.git", "0123456789abcdef", "success", once="pending")
    assert json.loads(owed.to_json())["once"] == "pending"
    assert Manifest.parse(owed.to_json()).once_owed and not manifest.once_owed


@pytest.mark.parametrize(("changes", "reason"), [
    ({"commit": None}, "commit is not a full hex commit id"),
    ({"commit": SHA.upper()}, "commit is not a full hex commit id"),
    ({"build_key": "has space"}, "build_key is not a build key"),
    ({"build_key": "k" * 129}, "build_key is not a build key"),
    ({"status": "pending"}, "status is not one of updating, success, failed"),
    ({"status": "SUCCESS"}, "status is not one of"),
    ({"declarations_commit": "abc"}, "declarations_commit is not a full hex commit id"),
    ({"once": "later"}, "once is not one of '', 'pending', 'done'"),
    ({"branch": None}, "branch is missing"),
    ({"repository": 7}, "repository is not a string"),
    ({"message": ["x"]}, "message is not a string"),
])
def test_a_field_that_is_not_what_we_write_is_refused_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        Manifest.parse(text(**changes))
    assert str(caught.value).startswith(reason)
    assert Manifest.from_json(text(**changes)) is None


def test_text_that_may_reach_a_terminal_is_escaped_and_bounded() -> None:
    manifest = Manifest.parse(text(branch="main\x1b[2J", message="line\nforged", author="a" * 1000,
                                   subject="\x07" + "s" * 1000))
    assert manifest.branch == "main\\x1b[2J" and manifest.message == "line\\nforged"
    assert manifest.author == "a" * wire.MAX_COMMIT_TEXT + "..."
    assert manifest.subject.startswith("\\x07s") and len(manifest.subject) == wire.MAX_COMMIT_TEXT + 3


def test_a_manifest_too_large_or_deep_to_read_is_a_limit_not_a_bad_field() -> None:
    with pytest.raises(wire.WireLimit):
        Manifest.parse(text(message="x" * wire.MAX_JSON_BYTES))
    deep: list[Any] = []
    for _ in range(wire.MAX_JSON_DEPTH - 2):
        deep = [deep]  # with the manifest's own object: MAX_JSON_DEPTH levels
    assert Manifest.parse(text(extra=deep)).commit == SHA  # at the limit: read, the unknown key ignored
    with pytest.raises(wire.WireLimit):
        Manifest.parse(text(extra=[deep]))
    assert Manifest.from_json("not json") is None and Manifest.from_json("[]") is None
