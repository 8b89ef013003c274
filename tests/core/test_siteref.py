"""reconciler.core.siteref: a site's ref (branch, tag or commit) as the probe resolves it, as status
and history describe it, and as a manifest's `branch` field records it: every ref we write reads
back as itself, and a field we never write reads as no ref at all."""

from __future__ import annotations

import pytest

from reconciler.core.siteref import SiteRef

SHA1 = "0123456789abcdef0123456789abcdef01234567"
SHA256 = "0123456789abcdef" * 4


@pytest.mark.parametrize(("ref", "git_ref", "described", "record"), [
    (SiteRef("branch", "feature/x"), "refs/heads/feature/x", "branch feature/x", "feature/x"),
    (SiteRef("tag", "v1.4.2"), "refs/tags/v1.4.2", "tag v1.4.2", "tag v1.4.2"),
    (SiteRef("commit", SHA1), None, "commit 0123456789ab", f"commit {SHA1}"),
    (SiteRef("commit", SHA256), None, "commit 0123456789ab", f"commit {SHA256}"),
])
def test_each_kind_of_ref_is_resolved_described_and_recorded(ref: SiteRef, git_ref: str | None, described: str,
                                                            record: str) -> None:
    assert ref.git_ref == git_ref
    assert ref.describe() == described
    assert ref.record == record
    assert SiteRef.from_record(ref.record) == ref


@pytest.mark.parametrize("text", [None, "", "tag ", "commit 0123", f"commit {SHA1.upper()}", f"commit {SHA1} ",
                                  f"pin {SHA1}", "branch main"])
def test_a_field_we_never_write_names_no_ref(text: str | None) -> None:
    assert SiteRef.from_record(text) is None
