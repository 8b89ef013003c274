"""reconciler.core.facts: what a probe found for a site, as the planner reads it. A release's commit
and status come from its manifest, else from its HEAD (an adopted release); the live release is the
one the site link points at, only when the link resolves to a release the probe saw; releases are
ordered by the time their names encode; a site's problems are kept, the first few in full."""

from __future__ import annotations

from reconciler.core.facts import MAX_PROBLEMS, ReleaseFacts, SiteFacts
from reconciler.core.manifest import Manifest

SHA = "a" * 40
OTHER = "b" * 40


def manifest(status: str, commit: str = SHA) -> Manifest:
    return Manifest(commit, "main", "/srv/git/shop.git", "0123456789abcdef", status)


def site(*names: str, target: str | None = None, dangling: bool = False) -> SiteFacts:
    facts = SiteFacts("shop.example.com", "/home/brokeforge", link_target=target, dangling=dangling)
    facts.releases = {name: ReleaseFacts(name, manifest("success")) for name in names}
    return facts


def test_a_release_reads_commit_and_status_from_its_manifest_before_its_head() -> None:
    release = ReleaseFacts("01082025-091000", manifest("failed"), head=OTHER)
    assert (release.commit, release.status) == (SHA, "failed")
    adopted = ReleaseFacts("01082025-091000", head=OTHER)
    assert (adopted.commit, adopted.status) == (OTHER, "success")
    unknown = ReleaseFacts("01082025-091000")
    assert (unknown.commit, unknown.status) == (None, "unknown")


def test_the_live_release_is_the_link_target_when_it_is_a_release_we_saw() -> None:
    names = ("01082025-091000", "31122024-235959")
    assert site(*names, target="deployments/shop.example.com/01082025-091000").active_release == "01082025-091000"
    assert site(*names, target="/home/brokeforge/deployments/shop.example.com/31122024-235959/") \
        .active_release == "31122024-235959"
    assert site(*names).active_release is None  # no link
    assert site(*names, target="deployments/shop.example.com/01082025-091000", dangling=True).active_release is None
    assert site(*names, target="deployments/shop.example.com/02082025-000000").active_release is None  # not probed
    assert site(*names, target="deployments/other.example.com/01082025-091000").active_release is None
    assert site(*names, target="/var/www/html").active_release is None


def test_releases_are_ordered_by_the_time_their_names_encode() -> None:
    # Day-first names: string order would put 31 December after 1 August.
    facts = site("01082025-091000", "31122024-235959", "01082025-090959")
    assert [r.name for r in facts.ordered()] == ["31122024-235959", "01082025-090959", "01082025-091000"]


def test_the_first_problems_are_kept_and_the_rest_only_counted() -> None:
    facts = site()
    assert facts.problem is None
    for n in range(MAX_PROBLEMS + 3):
        facts.note_problem(f"p{n}")
    assert facts.problem == "; ".join(f"p{n}" for n in range(MAX_PROBLEMS)) + "; and more"
