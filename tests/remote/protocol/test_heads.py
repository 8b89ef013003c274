"""The git heads a probe resolves (remote/protocol/heads.py): which (repository, ref) pairs in what
order, how long each `git ls-remote` and all of them may take, and what one answer means. Pure;
the shell that runs them is exercised by tests/remote/test_probe.py and the faults suite."""

from __future__ import annotations

import pytest

from reconciler.remote.protocol import heads

SHA_A = "a" * 40
SHA_B = "b" * 40
KEY = ("git@example.com:app.git", "refs/tags/v1.4.2")


def test_heads_are_asked_once_each_in_one_fixed_order() -> None:
    asked = [("r2", "refs/heads/main"), ("r1", "refs/heads/main"), ("r2", "refs/heads/main")]
    assert heads.head_order(asked) == [("r1", "refs/heads/main"), ("r2", "refs/heads/main")]


@pytest.mark.parametrize(("timeout", "git_timeout", "bounds"), [
    (120.0, None, (20, 60)),   # the default: at most DEFAULT_GIT_TIMEOUT each, half the probe in all
    (40.0, None, (10, 20)),    # a short probe: a quarter of it each
    (120.0, 90.0, (60, 60)),   # a setting above the budget is held to the budget
    (120.0, 0.2, (1, 60)),     # whole seconds, at least one
    (40.0, 7.2, (8, 20)),      # an explicit bound, rounded up
    (1.0, None, (1, 1)),
])
def test_each_ls_remote_and_all_of_them_have_a_bound_within_the_probes(
        timeout: float, git_timeout: float | None, bounds: tuple[int, int]) -> None:
    assert heads.head_bounds(timeout, git_timeout) == bounds
    each, budget = bounds
    assert each <= budget <= max(1, timeout / 2)


def test_the_peeled_line_of_an_annotated_tag_names_the_commit() -> None:
    answer = f"{SHA_A}\trefs/tags/v1.4.2\n{SHA_B}\trefs/tags/v1.4.2^{{}}\n"
    assert heads.branch_head(KEY, 0, answer).sha == SHA_B


def test_only_the_exact_ref_counts_not_a_ref_that_ends_like_it() -> None:
    answer = f"{SHA_B}\trefs/heads/x/refs/tags/v1.4.2\n{SHA_A}\trefs/tags/v1.4.2\n"
    assert heads.branch_head(KEY, 0, answer).sha == SHA_A
    missing = heads.branch_head(KEY, 0, f"{SHA_B}\trefs/heads/x/refs/tags/v1.4.2\n")
    assert missing.sha is None and missing.error == "tag 'v1.4.2' not found in git@example.com:app.git"


def test_a_ref_listed_with_two_commits_is_no_answer() -> None:
    answer = f"{SHA_A}\trefs/tags/v1.4.2\n{SHA_B}\trefs/tags/v1.4.2\n"
    head = heads.branch_head(KEY, 0, answer)
    assert head.sha is None and head.error == "tag 'v1.4.2' is listed with 2 different commits"


def test_a_failed_ls_remote_gives_what_git_said_or_its_exit_status() -> None:
    said = heads.branch_head(KEY, 128, "fatal: could not read from remote repository\n")
    assert said.sha is None and said.error == "fatal: could not read from remote repository"
    silent = heads.branch_head(KEY, 2, "   \n")
    assert silent.sha is None and silent.error == "git ls-remote exited 2"
    assert said.unreachable and silent.unreachable  # the repository did not answer: an outage


def test_a_ref_the_host_does_not_have_is_no_outage() -> None:
    head = heads.branch_head(KEY, 0, f"{SHA_A}\trefs/tags/v1.4.3\n")
    assert head.sha is None and not head.unreachable


def test_a_malformed_sha_is_not_taken_for_a_commit() -> None:
    head = heads.branch_head(("r", "refs/heads/main"), 0, f"{SHA_A.upper()}\trefs/heads/main\n")
    assert head.sha is None and head.error == "branch 'main' not found in r"


def test_a_silent_git_host_is_named_with_its_bound_and_an_unasked_head_says_why() -> None:
    assert heads.unanswered(20) == "the git host did not answer within 20s (git_timeout)"
    assert heads.unanswered(0).startswith("not asked: other sites' git hosts did not answer")


def test_refs_are_named_by_kind_in_messages() -> None:
    assert heads.ref_label("refs/heads/main") == "branch 'main'"
    assert heads.ref_label("refs/tags/v1") == "tag 'v1'"
    assert heads.ref_label("refs/pull/1/head") == "ref 'refs/pull/1/head'"


def test_the_bound_command_prefers_a_kill_after_and_falls_back_to_none() -> None:
    assert f"gto='timeout -k {heads.GIT_KILL_AFTER}'" in heads.FIND_TIMEOUT
    assert heads.FIND_TIMEOUT.startswith("gto=\n")
