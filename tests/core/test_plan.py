"""The planner, table-driven: given these facts, expect these actions (like pyinfra's operation
fixtures). Facts are built directly; `now` is passed in; nothing touches a server or a clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.layout import parse_release, release_name, sort_releases
from reconciler.core.manifest import Manifest
from reconciler.core.plan import (
    DEGRADED,
    FAILED,
    HEALTHY,
    MISSING,
    OUT_OF_SYNC,
    SYNCED,
    UNKNOWN,
    Activate,
    Deploy,
    FailureMemory,
    Plan,
    Provision,
    Prune,
    Relink,
    Reload,
    prune_candidates,
)
from reconciler.core.rollout import plan_site
from tests.support import site_declaration

DOMAIN = "shop.example.com"
BASE = "/home/brokeforge"
REPO = "git@github.com:acme/shop.git"
NOW = datetime(2025, 8, 1, 9, 12, 45, tzinfo=UTC)
NOW_NAME = "01082025-091245"
HEAD = "a" * 40
OLD = "b" * 40
OLDER = "c" * 40

# Release names whose string order differs from their time order.
R1 = "31122024-235959"  # oldest
R2 = "15012025-080000"
R3 = "30062025-120000"
R4 = "31072025-143022"
R5 = "01082025-091000"  # newest, still before NOW
assert sort_releases([R1, R2, R3, R4, R5]) == [R1, R2, R3, R4, R5]
assert sorted([R1, R2, R3, R4, R5]) != [R1, R2, R3, R4, R5]


# A SiteDeclaration in memory (tests.support's one builder), on these constants.
declare = partial(site_declaration, domain=DOMAIN, server="web-1", base_path=BASE, repository=REPO)


SITE = declare()
TAG_SITE = declare(tag="v1.4.2")
COMMIT_SITE = declare(commit=HEAD)
KEY = SITE.build_key
assert TAG_SITE.build_key == COMMIT_SITE.build_key == KEY, "the ref is not part of the build key: the commit is"
OTHER_KEY = declare(script="php artisan migrate --force\n").build_key
assert KEY != OTHER_KEY


def ok(name: str, commit: str = HEAD, key: str = KEY) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(commit, "main", REPO, key, "success"))


def failed(name: str, commit: str = HEAD, key: str = KEY) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(commit, "main", REPO, key, "failed", message="script exited 1"))


def updating(name: str, commit: str = HEAD, key: str = KEY) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(commit, "main", REPO, key, "updating"))


def tagged(name: str, commit: str = HEAD, tag: str = "v1.4.2", key: str = KEY) -> ReleaseFacts:
    """A release a tag site built: its manifest's `branch` field is `tag <name>` (SiteRef.record)."""
    return ReleaseFacts(name, Manifest(commit, f"tag {tag}", REPO, key, "success"))


def pinned_commit(name: str, commit: str = HEAD, key: str = KEY) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(commit, f"commit {commit}", REPO, key, "success"))


def adopted(name: str, commit: str = OLD) -> ReleaseFacts:
    """A release without a manifest (an existing BrokeForge server): only its git HEAD is known."""
    return ReleaseFacts(name, head=commit)


def unknown(name: str) -> ReleaseFacts:
    return ReleaseFacts(name)


def corrupt(name: str) -> ReleaseFacts:
    return ReleaseFacts(name, corrupt=True)


def server(
    *releases: ReleaseFacts,
    active: str | None = None,
    link: str | None = None,
    dangling: bool = False,
    provisioned: bool = True,
    shared: bool = True,
    path_kind: str | None = None,
    not_dirs: tuple[str, ...] = (),
) -> SiteFacts:
    """Facts of a server. `active` links the site to that release (relative target, as we write it)."""
    if active is not None:
        link = f"deployments/{DOMAIN}/{active}"
    kind = path_kind or ("symlink" if link is not None else "missing")
    return SiteFacts(
        DOMAIN, BASE, link_target=link, path_kind=kind, dangling=dangling,
        provisioned=provisioned, shared=shared,
        # insert in string order on purpose: the planner must order by encoded time itself
        releases={r.name: r for r in sorted(releases, key=lambda r: r.name)},
        not_dirs=list(not_dirs),
    )


def nothing() -> SiteFacts:
    return SiteFacts(DOMAIN, BASE)


@dataclass
class Case:
    id: str
    facts: SiteFacts
    actions: tuple[Any, ...]
    sync: str | None
    health: str | None = None
    site: SiteDeclaration = SITE
    head: BranchHead | None = field(default_factory=lambda: BranchHead(HEAD))
    memory: FailureMemory = field(default_factory=FailureMemory)
    message: tuple[str, ...] = ()  # fragments the message must contain ("" = must be empty)
    desired_release: str | None = None
    desired_commit: str | None = None


CASES = [
    # ---- first deploy
    Case("nothing-on-server", nothing(),
         (Provision(), Deploy(NOW_NAME, HEAD)), OUT_OF_SYNC, MISSING,
         desired_release=NOW_NAME, desired_commit=HEAD),
    Case("deployments-dir-without-shared", server(provisioned=True, shared=False),
         (Provision(), Deploy(NOW_NAME, HEAD)), OUT_OF_SYNC, MISSING),
    Case("provisioned-empty", server(),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, MISSING),
    # ---- steady state
    Case("head-built-and-active", server(ok(R4), active=R4),
         (), SYNCED, HEALTHY, message=("",), desired_release=R4, desired_commit=HEAD),
    Case("head-built-active-among-others", server(ok(R1, OLDER), ok(R2, OLD), ok(R4), active=R4),
         (), SYNCED, HEALTHY, desired_release=R4),
    Case("active-via-absolute-target", server(ok(R4), link=f"{BASE}/deployments/{DOMAIN}/{R4}"),
         (), SYNCED, HEALTHY),
    # ---- roll forward / activate
    Case("built-not-active", server(ok(R2, OLD), ok(R4), active=R2),
         (Activate(R4, "roll-forward"),), OUT_OF_SYNC, HEALTHY, desired_release=R4, desired_commit=HEAD),
    Case("built-but-no-link", server(ok(R4)),
         (Activate(R4, "activate"),), OUT_OF_SYNC, MISSING, desired_release=R4),
    Case("two-builds-of-head-newest-wins", server(ok(R2, OLD), ok(R3), ok(R4), active=R2),
         (Activate(R4, "roll-forward"),), OUT_OF_SYNC, HEALTHY, desired_release=R4),
    Case("two-builds-of-head-active-one-kept", server(ok(R3), ok(R4), active=R3),
         (), SYNCED, HEALTHY, desired_release=R3),
    # ---- drift: somebody changed the symlink by hand
    Case("drift-to-older-release", server(ok(R1, OLD), ok(R5), active=R1),
         (Activate(R5, "roll-forward"),), OUT_OF_SYNC, HEALTHY, desired_release=R5),
    Case("drift-to-foreign-target", server(ok(R4), link="/var/www/html"),
         (Activate(R4, "activate"),), OUT_OF_SYNC, DEGRADED, desired_release=R4),
    Case("dangling-link-head-built", server(ok(R4), link=f"deployments/{DOMAIN}/{R5}", dangling=True),
         (Activate(R4, "activate"),), OUT_OF_SYNC, DEGRADED, desired_release=R4),
    Case("dangling-link-nothing-built", server(link=f"deployments/{DOMAIN}/{R5}", dangling=True),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, DEGRADED, desired_release=NOW_NAME),
    Case("link-to-failed-release-dir", server(failed(R4), ok(R2, OLD), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY),
    # ---- a new commit or declaration change deploys
    Case("new-commit", server(ok(R4, OLD), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY, desired_release=NOW_NAME, desired_commit=HEAD),
    Case("changed-script", server(ok(R4, HEAD, OTHER_KEY), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY),
    Case("changed-shared", server(ok(R4), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY, site=declare(shared=["storage", ".env"])),
    Case("head-only-updating", server(ok(R2, OLD), updating(R4), active=R2),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY),
    Case("head-only-failed-on-server", server(ok(R2, OLD), failed(R4), active=R2),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY),  # the caller folds failed manifests into memory
    Case("head-release-without-manifest", server(adopted(R4, HEAD), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY),  # the build key of an adopted release is unknown
    # ---- failure memory
    Case("failed-commit-not-retried", server(ok(R2, OLD), active=R2),
         (), FAILED, HEALTHY,
         memory=FailureMemory({(HEAD, KEY): "deploy script failed (exit 3)"}),
         message=("deploy script failed (exit 3)", HEAD[:12]), desired_commit=HEAD),
    Case("failed-commit-not-retried-first-deploy", nothing(),
         (Provision(),), FAILED, MISSING,
         memory=FailureMemory({(HEAD, KEY): "clone failed"}), message=("clone failed",)),
    Case("new-commit-after-failure", server(ok(R2, OLD), failed(R3, OLDER), active=R2),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY,
         memory=FailureMemory({(OLDER, KEY): "deploy script failed (exit 1)"})),
    Case("changed-script-after-failure", server(ok(R2, OLD), active=R2),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY,
         memory=FailureMemory({(HEAD, OTHER_KEY): "deploy script failed (exit 1)"})),
    # ---- pin (rollback)
    Case("pin-existing-not-active", server(ok(R2, OLD), ok(R4), active=R4),
         (Activate(R2, "rollback"),), OUT_OF_SYNC, HEALTHY,
         site=declare(pin=R2), desired_release=R2, desired_commit=OLD),
    Case("pin-active", server(ok(R2, OLD), ok(R4), active=R2),
         (), SYNCED, HEALTHY, site=declare(pin=R2), desired_release=R2),
    Case("pin-ignores-branch-head-errors", server(ok(R2, OLD), active=R2),
         (), SYNCED, HEALTHY, site=declare(pin=R2), head=BranchHead(None, "fatal: could not read")),
    Case("pin-ignores-failure-memory", server(ok(R2, OLD), ok(R4), active=R4),
         (Activate(R2, "rollback"),), OUT_OF_SYNC, HEALTHY, site=declare(pin=R2),
         memory=FailureMemory({(OLD, KEY): "old failure"})),
    Case("pin-adopted-release", server(adopted(R1, OLDER), ok(R4), active=R4),
         (Activate(R1, "rollback"),), OUT_OF_SYNC, HEALTHY, site=declare(pin=R1), desired_commit=OLDER),
    Case("pin-missing", server(ok(R4), active=R4),
         (), None, DEGRADED, site=declare(pin=R1), message=(R1,), desired_release=R1),
    Case("pin-missing-empty-server", nothing(),
         (), None, DEGRADED, site=declare(pin=R1), message=(R1,)),
    Case("pin-failed-release", server(failed(R2), ok(R4), active=R4),
         (), None, DEGRADED, site=declare(pin=R2), message=(R2,)),
    Case("pin-updating-release", server(updating(R5), ok(R4), active=R4),
         (), None, DEGRADED, site=declare(pin=R5), message=(R5,)),
    Case("pin-name-is-a-file", server(ok(R4), active=R4, not_dirs=(R2,)),
         (), None, DEGRADED, site=declare(pin=R2), message=(R2,)),
    # ---- the site path is in the way
    Case("site-path-is-directory", server(ok(R4), path_kind="dir"),
         (), FAILED, None, message=(f"{BASE}/{DOMAIN}",)),
    Case("site-path-is-directory-nothing-else", SiteFacts(DOMAIN, BASE, path_kind="dir"),
         (), FAILED, None, message=(f"{BASE}/{DOMAIN}",)),
    Case("site-path-is-file", server(path_kind="file"),
         (), FAILED, None, message=(f"{BASE}/{DOMAIN}",)),
    Case("site-path-is-directory-even-with-pin", server(ok(R2), path_kind="dir"),
         (), FAILED, None, site=declare(pin=R2)),
    # ---- branch head unresolvable
    Case("head-unresolvable", server(ok(R4), active=R4),
         (), UNKNOWN, HEALTHY, head=BranchHead(None, "fatal: repository 'x' not found"),
         message=("repository 'x' not found",)),
    Case("head-missing-branch", server(ok(R4), active=R4),
         (), UNKNOWN, HEALTHY, head=BranchHead(None, "branch 'main' not found in x"),
         message=("branch 'main' not found",)),
    Case("head-not-probed", server(ok(R4), active=R4),
         (), UNKNOWN, HEALTHY, head=None, message=("main",)),
    Case("head-unresolvable-nothing-on-server", nothing(),
         (), UNKNOWN, MISSING, head=BranchHead(None, "Could not resolve host: github.com"),
         message=("Could not resolve host",)),
    # ---- a tag site: the head is the commit the tag names, followed when it moves
    Case("tag-first-deploy", nothing(),
         (Provision(), Deploy(NOW_NAME, HEAD)), OUT_OF_SYNC, MISSING, site=TAG_SITE, desired_commit=HEAD),
    Case("tag-built-and-active", server(tagged(R4), active=R4),
         (), SYNCED, HEALTHY, site=TAG_SITE, desired_release=R4, desired_commit=HEAD),
    Case("tag-moved", server(tagged(R4, OLD), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY, site=TAG_SITE, desired_commit=HEAD),
    Case("tag-moved-back-to-a-kept-build", server(tagged(R2), tagged(R4, OLD), active=R4),
         (Activate(R2, "roll-forward"),), OUT_OF_SYNC, HEALTHY, site=TAG_SITE, desired_release=R2),
    Case("tag-not-found", server(tagged(R4), active=R4),
         (), UNKNOWN, HEALTHY, site=TAG_SITE, head=BranchHead(None, "tag 'v1.4.2' not found in x"),
         message=("cannot resolve tag 'v1.4.2'", "not found")),
    Case("tag-not-probed", server(tagged(R4), active=R4),
         (), UNKNOWN, HEALTHY, site=TAG_SITE, head=None, message=("tag 'v1.4.2'",)),
    Case("tag-failed-commit-not-retried", server(tagged(R2, OLD), active=R2),
         (), FAILED, HEALTHY, site=TAG_SITE, memory=FailureMemory({(HEAD, KEY): "deploy script failed (exit 3)"}),
         message=("exit 3",)),
    # ---- a commit site: the declaration is the commit; no head is needed, and none moves it
    Case("commit-first-deploy-without-a-head", nothing(),
         (Provision(), Deploy(NOW_NAME, HEAD)), OUT_OF_SYNC, MISSING, site=COMMIT_SITE, head=None,
         desired_commit=HEAD),
    Case("commit-ignores-a-head", server(pinned_commit(R4), active=R4),
         (), SYNCED, HEALTHY, site=COMMIT_SITE, head=BranchHead(OLD), desired_release=R4, desired_commit=HEAD),
    Case("commit-ignores-a-head-error", server(pinned_commit(R4), active=R4),
         (), SYNCED, HEALTHY, site=COMMIT_SITE, head=BranchHead(None, "fatal: could not read")),
    Case("commit-from-branch-build", server(ok(R4), active=R4),
         (), SYNCED, HEALTHY, site=COMMIT_SITE, head=None, desired_release=R4),  # same commit, same build
    Case("commit-changed", server(pinned_commit(R4, OLD), active=R4),
         (Deploy(NOW_NAME, HEAD),), OUT_OF_SYNC, HEALTHY, site=COMMIT_SITE, head=None),
    Case("commit-failed-not-retried", server(pinned_commit(R2, OLD), active=R2),
         (), FAILED, HEALTHY, site=COMMIT_SITE, head=None,
         memory=FailureMemory({(HEAD, KEY): "clone failed (exit 1): commit not in the repository"}),
         message=("commit not in the repository",)),
    Case("commit-pinned", server(pinned_commit(R2, OLD), pinned_commit(R4), active=R4),
         (Activate(R2, "rollback"),), OUT_OF_SYNC, HEALTHY, site=declare(commit=HEAD, pin=R2), head=None),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_site(case: Case) -> None:
    plan = plan_site(case.site, case.facts, case.head, case.memory, NOW)
    assert isinstance(plan, Plan)
    converging = tuple(a for a in plan.actions if not isinstance(a, Prune))
    assert converging == case.actions, plan
    if case.sync is not None:
        assert plan.sync == case.sync, plan
    else:
        assert plan.sync != SYNCED, plan
    if case.health is not None:
        assert plan.health == case.health, plan
    for fragment in case.message:
        if fragment == "":
            assert plan.message == "", plan
        else:
            assert fragment in plan.message, plan
    if plan.sync != SYNCED:
        assert plan.message or plan.actions, "a site that is not Synced says why or acts"
    if case.sync in (FAILED, UNKNOWN) or case.sync is None:
        assert plan.message, "a site in trouble carries a message (DESIGN lesson 13)"
    if case.desired_release is not None:
        assert plan.desired_release == case.desired_release, plan
    if case.desired_commit is not None:
        assert plan.desired_commit == case.desired_commit, plan
    assert plan.changes is bool(plan.actions)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan_never_deploys_or_touches_in_place_of_a_pin_or_a_blocker(case: Case) -> None:
    plan = plan_site(case.site, case.facts, case.head, case.memory, NOW)
    deploys = [a for a in plan.actions if isinstance(a, Deploy)]
    if case.site.pin is not None:
        assert deploys == [], "a pin never deploys"
        assert all(a.release == case.site.pin for a in plan.actions if isinstance(a, Activate))
    if case.facts.path_kind in ("dir", "file"):
        assert plan.actions == ()
    if case.memory.get(HEAD, case.site.build_key) is not None:
        assert deploys == []
    for deploy in deploys:
        assert deploy.commit == (case.site.commit or HEAD)
    # whatever is pruned is never the active release, the pin, or the release being activated
    pruned = {name for a in plan.actions if isinstance(a, Prune) for name in a.releases}
    activated = {a.release for a in plan.actions if isinstance(a, Activate)}
    assert not pruned & ({case.facts.active_release, case.site.pin} | activated)


@pytest.mark.parametrize(("site", "live", "reason"), [
    (SITE, None, "first deploy"),
    (SITE, ok(R4, OLD), "app commit"),
    (SITE, ok(R4, HEAD, OTHER_KEY), "declaration"),
    (TAG_SITE, None, "first deploy"),
    (TAG_SITE, tagged(R4, OLD), "tag moved"),           # `git tag -f v1.4.2`, pushed
    (TAG_SITE, tagged(R4, OLD, "v1.4.1"), "declaration"),  # the declaration names another tag
    (TAG_SITE, ok(R4, OLD), "declaration"),              # was following a branch
    (TAG_SITE, adopted(R4, OLD), "declaration"),         # built elsewhere: nothing says it was this tag
    (TAG_SITE, tagged(R4, HEAD, key=OTHER_KEY), "declaration"),
    (COMMIT_SITE, pinned_commit(R4, OLD), "declaration"),
    (COMMIT_SITE, ok(R4, OLD), "declaration"),
], ids=["branch-first", "branch-moved", "branch-script", "tag-first", "tag-moved", "tag-renamed", "branch-to-tag",
        "tag-over-adopted", "tag-script", "commit-changed", "branch-to-commit"])
def test_the_deploy_says_why(site: SiteDeclaration, live: ReleaseFacts | None, reason: str) -> None:
    """History's trigger: a moved tag is followed and says so; another ref named is a declaration change."""
    facts = server(live, active=R4) if live is not None else nothing()
    (deploy,) = [a for a in plan_site(site, facts, BranchHead(HEAD), FailureMemory(), NOW).actions
                 if isinstance(a, Deploy)]
    assert deploy.reason == reason and deploy.commit == HEAD


def test_plan_is_deterministic_and_uses_now() -> None:
    facts = server(ok(R4, OLD), active=R4)
    a = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), NOW)
    b = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), NOW)
    assert a == b
    later = datetime(2025, 8, 2, 0, 0, 0, tzinfo=UTC)
    c = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), later)
    assert c.actions == (Deploy("02082025-000000", HEAD),)


# --------------------------------------------------------------------------- new release names


@pytest.mark.parametrize(
    ("facts", "now"),
    [
        pytest.param(server(ok(NOW_NAME, OLD), active=NOW_NAME), NOW, id="same-second"),
        pytest.param(server(ok("05082025-000000", OLD), active="05082025-000000"), NOW, id="clock-behind"),
        pytest.param(server(ok(R1, OLD), ok("02082025-000000", OLD), active=R1), NOW, id="future-release"),
        pytest.param(server(ok(R4, OLD), active=R4, not_dirs=(NOW_NAME,)), NOW, id="name-taken-by-a-file"),
        pytest.param(server(ok(R4, OLD), updating("01082025-091246"), failed("01082025-091247", OLDER), active=R4),
                     NOW, id="newer-updating-and-failed"),
        pytest.param(server(ok("31122025-235959", OLD), active="31122025-235959"),
                     datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC), id="year-rollover"),
        pytest.param(server(ok("31122024-235959", OLD), ok("01012025-000005", OLD), active="31122024-235959"),
                     datetime(2025, 1, 1, 0, 0, 0, tzinfo=UTC), id="string-order-differs"),
    ],
)
def test_new_release_is_newer_than_everything(facts: SiteFacts, now: datetime) -> None:
    plan = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), now)
    deploys = [a for a in plan.actions if isinstance(a, Deploy)]
    assert len(deploys) == 1, plan
    name = deploys[0].release
    existing = [*facts.releases, *facts.not_dirs]
    assert name not in existing
    moment = parse_release(name)
    assert moment is not None and moment >= now.replace(microsecond=0)
    for other in existing:
        other_time = parse_release(other)
        assert other_time is not None and moment > other_time, (name, other)
    assert plan.desired_release == name


# --------------------------------------------------------------------------- pruning in the plan


def test_plan_prunes_after_activation_by_encoded_time() -> None:
    # keep 2; five successful releases; the string-order oldest ("01082025-...") is really the newest.
    facts = server(ok(R1, OLDER), ok(R2, OLDER), ok(R3, OLD), ok(R4, OLD), ok(R5), active=R4)
    plan = plan_site(declare(keep=2), facts, BranchHead(HEAD), FailureMemory(), NOW)
    assert plan.actions[0] == Activate(R5, "roll-forward")
    prunes = [a for a in plan.actions if isinstance(a, Prune)]
    assert prunes == [Prune((R1, R2, R3))]


def test_plan_prune_never_touches_pin_or_active() -> None:
    facts = server(ok(R1, OLDER), ok(R2, OLDER), ok(R3, OLD), ok(R4, OLD), ok(R5), active=R5)
    plan = plan_site(declare(keep=1, pin=R1), facts, BranchHead(HEAD), FailureMemory(), NOW)
    assert plan.actions[0] == Activate(R1, "rollback")
    pruned = [n for a in plan.actions if isinstance(a, Prune) for n in a.releases]
    assert R1 not in pruned  # pinned, about to be active
    assert R5 not in pruned  # the newest
    assert pruned == [R2, R3, R4]


def test_plan_prune_only_touches_release_names() -> None:
    facts = server(ok(R1), ok(R5), active=R5, not_dirs=(R2,))
    plan = plan_site(declare(keep=1), facts, BranchHead(HEAD), FailureMemory(), NOW)
    pruned = [n for a in plan.actions if isinstance(a, Prune) for n in a.releases]
    assert pruned == [R1]


# --------------------------------------------------------------------------- prune_candidates


def ordered(*releases: ReleaseFacts) -> list[ReleaseFacts]:
    by_name = {r.name: r for r in releases}
    return [by_name[n] for n in sort_releases(by_name)]


PRUNE_CASES = [
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 2, R5, None, [R1, R2, R3],
                 id="keep-newest-two"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 14, R5, None, [], id="keep-more-than-exist"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 5, R5, None, [], id="keep-exactly-all"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 1, R5, None, [R1, R2, R3, R4], id="keep-one"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 1, None, None, [], id="active-unknown-refuses"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 2, None, R1, [], id="active-unknown-with-pin"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 1, R1, None, [R2, R3, R4],
                 id="old-active-kept-and-newest-kept"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 1, R5, R2, [R1, R3, R4], id="pin-kept"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), ok(R5)), 2, R3, R1, [R2], id="active-and-pin-extra"),
    # failed releases do not count towards keep (a bug Capistrano and Deployer both had)
    pytest.param(ordered(ok(R1), ok(R2), failed(R3), failed(R4), ok(R5)), 2, R5, None, [R1, R3, R4],
                 id="failed-do-not-count"),
    pytest.param(ordered(ok(R1), ok(R2), failed(R3), failed(R4), failed(R5)), 2, R2, None, [R3, R4],
                 id="newest-failed-kept-rest-pruned"),
    pytest.param(ordered(ok(R1), failed(R2), failed(R3), failed(R4), ok(R5)), 2, R5, None, [R2, R3, R4],
                 id="only-two-successes-both-kept"),
    # never releases that are building or whose state is unknown
    pytest.param(ordered(updating(R1), unknown(R2), corrupt(R3), ok(R4), ok(R5)), 1, R5, None, [R4],
                 id="updating-unknown-corrupt-kept"),
    pytest.param(ordered(ok(R1), ok(R2), ok(R3), ok(R4), updating(R5)), 1, R4, None, [R1, R2, R3],
                 id="newest-updating-kept"),
    # an adopted release (no manifest, a git HEAD) is a successful release
    pytest.param(ordered(adopted(R1), adopted(R2), ok(R3), ok(R4), ok(R5)), 2, R5, None, [R1, R2, R3],
                 id="adopted-count-as-success"),
    # order is by encoded time: R5 ("01082025-...") sorts first as a string but is the newest
    pytest.param(ordered(ok("31122024-235959"), ok("01012025-000000")), 1, "01012025-000000", None,
                 ["31122024-235959"], id="year-boundary"),
    pytest.param(ordered(ok("02012025-000000"), ok("01022025-000000"), ok("31012025-000000")), 1,
                 "01022025-000000", None, ["02012025-000000", "31012025-000000"], id="month-boundary"),
    pytest.param([], 1, R5, None, [], id="nothing"),
    pytest.param(ordered(ok(R5)), 1, R5, None, [], id="single"),
]


@pytest.mark.parametrize(("releases", "keep", "active", "pinned", "expected"), PRUNE_CASES)
def test_prune_candidates(
    releases: list[ReleaseFacts], keep: int, active: str | None, pinned: str | None, expected: list[str]
) -> None:
    result = prune_candidates(releases, keep, active, pinned)
    assert result == expected
    by_name = {r.name: r for r in releases}
    assert active not in result
    assert pinned not in result
    if releases:
        assert releases[-1].name not in result  # the newest, whatever its status
    assert all(by_name[n].status in ("success", "failed") for n in result)
    assert result == sort_releases(result)  # oldest first
    kept_successes = [r.name for r in releases if r.status == "success" and r.name not in result]
    assert len(kept_successes) >= min(keep, len([r for r in releases if r.status == "success"]))


def test_prune_candidates_month_boundary_order() -> None:
    # 02012025 < 31012025 < 01022025 in time; as strings 01022025 < 02012025 < 31012025.
    releases = ordered(ok("02012025-000000"), ok("01022025-000000"), ok("31012025-000000"))
    assert [r.name for r in releases] == ["02012025-000000", "31012025-000000", "01022025-000000"]
    assert prune_candidates(releases, 1, "01022025-000000", None) == ["02012025-000000", "31012025-000000"]
    assert prune_candidates(releases, 2, "01022025-000000", None) == ["02012025-000000"]


@pytest.mark.parametrize("keep", [1, 2, 3, 5, 14])
def test_prune_keeps_exactly_keep_newest_successes(keep: int) -> None:
    names = [release_name(datetime(2025, 1, day, 12, 0, 0, tzinfo=UTC)) for day in range(1, 21)]
    releases = ordered(*(ok(n) for n in names))
    result = prune_candidates(releases, keep, names[-1], None)
    kept = [n for n in names if n not in result]
    assert kept == names[-keep:]


def test_redeploy_request_makes_builds_made_before_it_not_count() -> None:
    """`fresh_after` (a pending `redeploy`: the time the newest release encoded when it was asked):
    the head's build named up to it does not satisfy it; one named after it does."""
    facts = server(ok(R4), active=R4)
    plan = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), NOW, fresh_after=release_time_of(R4))
    assert plan.actions[0] == Deploy(NOW_NAME, HEAD) and plan.sync == OUT_OF_SYNC
    plan = plan_site(SITE, server(ok(R4), ok(R5), active=R5), BranchHead(HEAD), FailureMemory(), NOW,
                     fresh_after=release_time_of(R4))
    assert plan.actions == () and plan.sync == SYNCED


def release_time_of(name: str) -> datetime:
    moment = parse_release(name)
    assert moment is not None
    return moment


def test_the_newest_failed_releases_are_kept_for_their_logs() -> None:
    """A successful deploy does not delete every failed release (and with it
    the log that says why it failed): the `keep_failed` newest stay, and never count towards keep."""
    releases = [failed(R1), failed(R2), ok(R3), failed(R4), ok(R5)]
    assert prune_candidates(releases, 1, R5, None) == [R1, R2, R3, R4]
    assert prune_candidates(releases, 1, R5, None, keep_failed=2) == [R1, R3]
    assert prune_candidates(releases, 1, R5, None, keep_failed=5) == [R3]
    site = declare(keep=1, keep_failed=1)
    plan = plan_site(site, server(*releases, active=R5), BranchHead(HEAD), FailureMemory(), NOW)
    assert plan.actions == (Prune((R1, R2, R3)),)


def test_an_owed_reload_is_retried_while_its_release_is_live() -> None:
    """Reload(live) while the live release's reload is owed; Synced but Degraded
    with the reason. An activation or a deploy reloads anyway, so nothing extra then; a site
    without a reload command owes nothing."""
    site = declare(reload="sudo service php8.3-fpm reload")
    facts = server(ok(R5), active=R5)
    plan = plan_site(site, facts, BranchHead(HEAD), FailureMemory(), NOW, reload_owed=(R5, "exit 1"))
    assert plan.actions == (Reload(R5, "exit 1"),)
    assert (plan.sync, plan.health) == (SYNCED, DEGRADED) and "exit 1" in plan.message
    moved = plan_site(site, server(ok(R4, OLD), ok(R5), active=R4), BranchHead(HEAD), FailureMemory(), NOW,
                      reload_owed=(R4, "exit 1"))
    assert moved.actions == (Activate(R5, "roll-forward"),)
    quiet = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), NOW, reload_owed=(R5, "exit 1"))
    assert quiet.actions == () and quiet.health == HEALTHY


def test_a_missing_shared_link_of_the_live_release_is_drift_put_back() -> None:
    """The live release's shared links are desired state: a missing one is drift, put back."""
    facts = server(ok(R5), active=R5)
    facts.unlinked = [".env", "storage"]
    plan = plan_site(SITE, facts, BranchHead(HEAD), FailureMemory(), NOW)
    assert plan.actions == (Relink(R5, (".env", "storage")),) and plan.sync == OUT_OF_SYNC
    # A release about to be switched away from is not relinked: the new one is linked by its deploy.
    moving = server(ok(R4, OLD), ok(R5), active=R4)
    moving.unlinked = [".env"]
    assert plan_site(SITE, moving, BranchHead(HEAD), FailureMemory(), NOW).actions == (Activate(R5, "roll-forward"),)
