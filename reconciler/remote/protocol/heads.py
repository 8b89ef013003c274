"""The git heads a probe resolves: which (repository, ref) pairs it asks for and in what order,
how long each `git ls-remote` and all of them may take, and what one answer means (the reader of
the probe's `@heads` and `@stalled` values). The shell that runs them is the probe's `probe_head`
function (remote/protocol/probing.py), which frames these answers as records."""

from __future__ import annotations

import math
from collections.abc import Iterable

from reconciler.core import wire
from reconciler.core.facts import BranchHead

# At most this many `git ls-remote` in flight: a git host's sshd drops a burst (MaxStartups).
HEADS_AT_ONCE = 8
# One git host that does not answer must not stall its server's probe: the
# probe is one command, and a timeout of it is the server's, so every site on it would be Unknown.
# So each `git ls-remote` gets its own bound (`head_bounds`), well under the probe's, run by
# coreutils/BusyBox `timeout` (SIGKILL GIT_KILL_AFTER seconds after SIGTERM): a ref whose host did
# not answer is that ref's error (Tag.STALLED). And all of them get a budget, half the probe's
# time: a batch of HEADS_AT_ONCE that cannot have its full bound any more is not started (its
# refs are "not asked"), so however many hosts do not answer, the sites' part of the probe runs.
# Without `timeout` on the server, ls-remote runs unbounded but for ssh's and curl's own bounds
# (GIT_PREAMBLE).
GIT_KILL_AFTER = 2
DEFAULT_GIT_TIMEOUT = 20  # at most: a quarter of the probe's timeout (command_timeout) when that is less
MAX_GIT_SECONDS = 10**7  # a bound in a stalled head record (ours: at most half of command_timeout)


def head_order(heads: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (repository, full ref) heads a probe resolves, each once: `@heads <i> ...` is the i-th."""
    return sorted(set(heads))


def head_bounds(timeout: float, git_timeout: float | None = None) -> tuple[int, int]:
    """(seconds one `git ls-remote` may take, seconds all of them may take) in a probe that may
    take `timeout`: `git_timeout`, by default a quarter of `timeout` and at most
    DEFAULT_GIT_TIMEOUT, within a budget of half of `timeout` (whole seconds, at least 1)."""
    budget = max(1, math.floor(timeout / 2))
    each = git_timeout if git_timeout is not None else min(DEFAULT_GIT_TIMEOUT, timeout / 4)
    return min(budget, max(1, math.ceil(each))), budget


# How `probe_head` bounds a command: `timeout` with a kill-after where it takes one, else plain.
FIND_TIMEOUT = (
    "gto=\n"
    "if command -v timeout >/dev/null 2>&1; then\n"
    f"  if timeout -k 1 9 true 2>/dev/null; then gto='timeout -k {GIT_KILL_AFTER}'\n"
    "  elif timeout 9 true 2>/dev/null; then gto=timeout; fi\n"
    "fi\n"
)


def unanswered(seconds: int) -> str:
    """Why a head is unknown when its git host did not answer (Tag.STALLED)."""
    if seconds == 0:
        return ("not asked: other sites' git hosts did not answer and used up the probe's time for git "
                "(git_timeout, half of command_timeout in all)")
    return f"the git host did not answer within {seconds}s (git_timeout)"


def ref_label(ref: str) -> str:
    """How a probed ref is named in messages: "branch 'main'", "tag 'v1.4.2'"."""
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix):
            return f"{kind} {wire.display(ref[len(prefix):])!r}"
    return f"ref {wire.display(ref)!r}"


def branch_head(key: tuple[str, str], rc: int, text: str) -> BranchHead:
    """What `git ls-remote <repository> <ref> <ref>^{}` said, exactly: the sha of the line whose
    ref (after the only tab) is `<ref>^{}` when there is one (an annotated tag, peeled: the
    commit it names, not the tag object), else of the line whose ref is `<ref>`; nothing looser.
    `key` is (repository, full ref: refs/heads/<branch> or refs/tags/<tag>)."""
    repository, ref = key
    if rc != 0:
        error = wire.display(text.strip())
        return BranchHead(None, error or f"git ls-remote exited {rc}", unreachable=True)
    peeled_ref = ref + "^{}"
    exact: set[str] = set()
    peeled: set[str] = set()
    for line in text.split("\n"):
        sha, tab, name = line.partition("\t")
        if tab and (checked := wire.as_sha(sha)) is not None:
            if name == ref:
                exact.add(checked)
            elif name == peeled_ref:
                peeled.add(checked)
    shas = peeled or exact
    if len(shas) == 1:
        return BranchHead(shas.pop())
    if shas:
        return BranchHead(None, f"{ref_label(ref)} is listed with {len(shas)} different commits")
    return BranchHead(None, f"{ref_label(ref)} not found in {wire.display(repository)}")
