"""Manifests, lock owners, ls-remote lines and the `@@held` line: any input gives a value or
"not one", never an exception, and nothing read from a server reaches a terminal unescaped."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core import wire
from reconciler.core.manifest import ONCE_STATES, STATUSES, Manifest
from reconciler.remote import lock
from reconciler.remote.protocol import locking
from reconciler.remote.protocol.heads import branch_head
from tests.properties.strategies import FAST, nasty_text
from tests.properties.test_wire import json_values

shas = st.one_of(st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
                 st.text(alphabet="0123456789abcdef", min_size=64, max_size=64))
printable_enough = st.one_of(st.text(max_size=30), nasty_text)


def all_printable(*texts: str) -> bool:
    return all(ch.isprintable() for text in texts for ch in text)


# --------------------------------------------------------------------------- manifests

manifests = st.builds(
    Manifest, commit=shas, branch=printable_enough, repository=printable_enough,
    build_key=st.text(alphabet="0123456789abcdef", min_size=16, max_size=16), status=st.sampled_from(STATUSES),
    started_at=printable_enough, completed_at=printable_enough,
    declarations_commit=st.one_of(st.just(""), shas), message=printable_enough, once=st.sampled_from(ONCE_STATES),
)


@FAST
@given(st.one_of(nasty_text, st.text(), json_values.map(json.dumps)))
def test_any_manifest_text_is_a_manifest_or_none(text: str) -> None:
    manifest = Manifest.from_json(text)
    if manifest is not None:
        assert wire.as_sha(manifest.commit) and manifest.status in STATUSES
        assert all_printable(manifest.branch, manifest.repository, manifest.message, manifest.started_at)


@FAST
@given(st.dictionaries(st.sampled_from(["commit", "branch", "repository", "build_key", "status", "message",
                                        "started_at", "completed_at", "declarations_commit", "once", "x"]),
                       st.one_of(json_values, shas, st.sampled_from(STATUSES), st.sampled_from(ONCE_STATES)),
                       max_size=11))
def test_manifest_fields_are_checked_not_coerced(data: dict[str, Any]) -> None:
    manifest = Manifest.from_json(json.dumps(data))
    if manifest is not None:
        assert manifest.commit == data["commit"] and manifest.status == data["status"]
        assert isinstance(data["branch"], str) and isinstance(data["repository"], str)
        # The run-once state is one of three words, never coerced: a release owes its step only
        # when its manifest says exactly "pending".
        assert manifest.once == data.get("once", "") and manifest.once in ONCE_STATES
        assert manifest.once_owed == (data.get("once") == "pending")


@FAST
@given(manifests)
def test_a_manifest_we_write_reads_back_escaped(manifest: Manifest) -> None:
    read = Manifest.from_json(manifest.to_json())
    assert read is not None
    assert read.commit == manifest.commit and read.build_key == manifest.build_key
    assert read.message == wire.printable(manifest.message) and read.branch == wire.printable(manifest.branch)
    if all_printable(manifest.branch, manifest.repository, manifest.message, manifest.started_at,
                     manifest.completed_at):
        assert read == manifest


# --------------------------------------------------------------------------- lock owners

owners = st.builds(
    lock.Owner, instance=printable_enough, run=printable_enough, host=printable_enough,
    pid=st.integers(min_value=1, max_value=lock.MAX_PID), purpose=printable_enough,
    since=st.floats(min_value=0, max_value=2e9),
)


@FAST
@given(st.one_of(nasty_text, st.text(), json_values.map(json.dumps)))
def test_any_owner_text_is_an_owner_or_none(text: str) -> None:
    owner = lock.Owner.from_text(text)
    if owner is not None:
        assert 1 <= owner.pid <= lock.MAX_PID
        assert all_printable(owner.describe(), owner.host, owner.purpose, owner.instance, owner.run)


@FAST
@given(st.fixed_dictionaries({}, optional={
    "instance": json_values, "run": json_values, "host": st.one_of(json_values, nasty_text),
    "pid": st.one_of(st.integers(), json_values, st.just(2**70)), "purpose": json_values,
    "since": st.one_of(st.integers(), st.floats(), st.just(10**400)),
}))
def test_owner_fields_never_raise(data: dict[str, Any]) -> None:
    text = json.dumps(data)  # NaN and Infinity included: the decoder refuses them
    owner = lock.Owner.from_text(text)
    if owner is not None:
        assert type(owner.pid) is int and owner.pid == data["pid"]
        assert all_printable(owner.describe())


@FAST
@given(owners)
def test_an_owner_we_write_reads_back(owner: lock.Owner) -> None:
    read = lock.Owner.from_text(owner.to_json())
    assert read is not None and read.pid == owner.pid and read.since == owner.since
    assert read.host == wire.printable(owner.host)
    assert all_printable(read.describe(), owner.describe())


@FAST
@given(nasty_text)
def test_the_held_line_never_raises(line: str) -> None:
    age = locking.held_age(line)
    assert isinstance(age, float)


def test_the_held_line_takes_ascii_digits_only() -> None:
    assert locking.held_age("@@held 100 40") == 60.0
    assert locking.held_age("@@held 100 0") == 0.0  # stat failed
    assert locking.held_age("@@held \u00b2 0") == 0.0
    assert locking.held_age("@@held 1\u0663 1") == 0.0
    assert locking.held_age("@@held 100 40 junk") == 0.0


# --------------------------------------------------------------------------- ls-remote

KEY = ("/srv/git/app.git", "refs/heads/main")
TAG_KEY = ("/srv/git/app.git", "refs/tags/v1.4.2")


@FAST
@given(st.sampled_from([KEY, TAG_KEY]), st.integers(min_value=0, max_value=255), st.one_of(nasty_text, st.text()))
def test_any_ls_remote_output_is_a_head_or_an_escaped_error(key: tuple[str, str], rc: int, text: str) -> None:
    head = branch_head(key, rc, text)
    ref = key[1]
    assert (head.sha is None) != (head.error is None)
    if head.sha is not None:
        lines = text.split("\n")
        assert rc == 0 and wire.as_sha(head.sha)
        assert f"{head.sha}\t{ref}^{{}}" in lines or f"{head.sha}\t{ref}" in lines
    else:
        assert head.error is not None and all_printable(head.error)
