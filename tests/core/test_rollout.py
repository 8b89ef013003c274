"""The rollout planner (core/rollout.py) for a fleet of one and a fleet of two: one table of cases,
each planned for one server and for two. Bugs that reviews reproduced on two real sshds are
cases here: a release whose `script_once` failed or never ran is never
switched to, a retried build elsewhere still owes the first server's run-once step, a `redeploy`
builds everywhere, drifted shared links and an owed reload are put right on every server, what a
dead run left is cleaned, a pin switches only where it is a good build everywhere.

The one-server rules are tested through `plan_site` in tests/core/test_plan.py (a view of the same
rollout); these cases are about what a rollout of N servers decides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, ReleaseFacts, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.manifest import ONCE_DONE, ONCE_PENDING, Manifest
from reconciler.core.plan import Clean, FailureMemory, Provision, Relink, Reload
from reconciler.core.reasons import DeployReason, SwitchReason
from reconciler.core.rollout import Build, RunOnce, plan_rollout
from reconciler.core.status import Health, Sync
from reconciler.window_settings import Window
from tests.core.test_plan import BASE, DOMAIN, HEAD, KEY, NOW, NOW_NAME, OLD, R3, R4, REPO, declare, failed, ok, server
from tests.support import site_declaration

SHAPES = {"one": ("web-1",), "two": ("web-1", "web-2")}


def fleet(servers: tuple[str, ...], **fields: Any) -> SiteDeclaration:
    return site_declaration(domain=DOMAIN, base_path=BASE, repository=REPO, servers=list(servers), **fields)


def once(name: str, state: str, commit: str = HEAD) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(commit, "main", REPO, KEY, "success", once=state))


def failed_once(name: str) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(HEAD, "main", REPO, KEY, "failed", message="script_once failed: exit 3"))


@dataclass
class Case:
    id: str
    site: dict[str, Any]
    first: Callable[[], SiteFacts]                 # the first server's facts
    rest: Callable[[], SiteFacts] | None = None   # every other server's (default: as the first)
    sync: Sync = Sync.OUT_OF_SYNC
    build_on: tuple[str, ...] | None = None        # "first" / "rest" / "all"
    release: str | None = None
    once: bool = False
    switch_on: tuple[str, ...] | None = None
    reason: SwitchReason | None = None
    prepare: dict[str, tuple[type, ...]] = field(default_factory=dict)  # "first"/"rest" -> action types
    halted: bool = False
    memory_first: bool = False                     # the first server remembers HEAD's build failed
    fresh_after: str | None = None
    reload_owed: tuple[str, str] | None = None
    health: Health | None = None


SCRIPT_ONCE = {"script_once": "php artisan migrate --force\n"}

CASES = [
    Case("first deploy builds everywhere, runs once, switches everywhere", SCRIPT_ONCE,
         lambda: server(provisioned=False, shared=False), build_on=("all",), release=NOW_NAME, once=True,
         switch_on=("all",), reason=SwitchReason.DEPLOY, prepare={"first": (Provision,), "rest": (Provision,)}),
    Case("a site without script_once has no run-once step", {}, lambda: server(ok(R3, OLD), active=R3),
         build_on=("all",), release=NOW_NAME, switch_on=("all",), reason=SwitchReason.DEPLOY),
    # Review blocker: a failing script_once said "no server switched", and the next poll switched
    # every server to that release without it.
    Case("a release whose script_once failed is never switched to", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), failed_once(R4), active=R3),
         rest=lambda: server(ok(R3, OLD), once(R4, ""), active=R3), sync=Sync.FAILED, halted=True,
         memory_first=True),
    # Review blocker: after a build failed on one server and was retried, script_once never ran.
    Case("a build retried elsewhere still owes the first server's run-once step", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), once(R4, ONCE_PENDING), active=R3),
         rest=lambda: server(ok(R3, OLD), active=R3), build_on=("rest",), release=R4, once=True,
         switch_on=("all",), reason=SwitchReason.DEPLOY),
    Case("a release whose run-once step never ran: run it, then switch", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), once(R4, ONCE_PENDING), active=R3), release=R4, once=True,
         switch_on=("all",), reason=SwitchReason.DEPLOY),
    Case("a release whose script_once failed, alone: never switched to", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), failed_once(R4), active=R3), sync=Sync.FAILED, halted=True,
         memory_first=True),
    Case("a release built before, its run-once step still owed: run, then switch", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), once(R4, ONCE_PENDING), active=R3),
         rest=lambda: server(ok(R3, OLD), once(R4, ""), active=R3), release=R4, once=True, switch_on=("all",),
         reason=SwitchReason.DEPLOY),
    Case("run once done: the release only switches", SCRIPT_ONCE,
         lambda: server(ok(R3, OLD), once(R4, ONCE_DONE), active=R3),
         rest=lambda: server(ok(R3, OLD), once(R4, ""), active=R3), release=R4, switch_on=("all",),
         reason=SwitchReason.ROLL_FORWARD),
    # Review: `redeploy` on a `servers = [...]` site built nothing and reported success.
    Case("redeploy builds a fresh release everywhere", {}, lambda: server(ok(R4), active=R4),
         build_on=("all",), release=NOW_NAME, switch_on=("all",), reason=SwitchReason.DEPLOY, fresh_after=R4),
    # Review: a deleted shared .env link was never put back.
    Case("a deleted shared link is relinked where it is gone", {}, lambda: _unlinked(server(ok(R4), active=R4)),
         rest=lambda: server(ok(R4), active=R4), release=R4, prepare={"first": (Relink,)}),
    # Review: a failed reload was never retried.
    Case("an owed reload is retried on every server", {"reload": "sudo systemctl reload php-fpm"},
         lambda: server(ok(R4), active=R4), sync=Sync.SYNCED, release=R4,
         prepare={"first": (Reload,), "rest": (Reload,)}, reload_owed=(R4, "exit 1"), health=Health.DEGRADED),
    Case("a half-built release a dead run left is cleaned", {}, lambda: _updating(server(ok(R4), active=R4)),
         rest=lambda: server(ok(R4), active=R4), sync=Sync.SYNCED, release=R4, prepare={"first": (Clean,)}),
    Case("a pin switches every server that is not on it", {"pin": R3}, lambda: server(ok(R3, OLD), ok(R4), active=R4),
         release=R3, switch_on=("all",), reason=SwitchReason.ROLLBACK),
    Case("a pin missing on a server switches nothing anywhere", {"pin": R3},
         lambda: server(ok(R3, OLD), ok(R4), active=R4), rest=lambda: server(ok(R4), active=R4), halted=True,
         release=R3, health=Health.DEGRADED),
    Case("a pinned release that owes its run-once step is not switched to", {**SCRIPT_ONCE, "pin": R3},
         lambda: server(once(R3, ONCE_PENDING, OLD), ok(R4), active=R4),
         rest=lambda: server(ok(R3, OLD), ok(R4), active=R4),
         halted=True, release=R3, health=Health.DEGRADED),
    Case("servers that disagree meet on the build they all have", {},
         lambda: server(ok(R3, OLD), ok(R4), active=R4), rest=lambda: server(ok(R3, OLD), ok(R4), active=R3),
         release=R4, switch_on=("rest",), reason=SwitchReason.ROLL_FORWARD),
    Case("a remembered failure is not retried", {}, lambda: server(ok(R3, OLD), active=R3), sync=Sync.FAILED,
         halted=True, memory_first=True),
]


def _unlinked(facts: SiteFacts) -> SiteFacts:
    facts.unlinked = [".env"]
    return facts


def _updating(facts: SiteFacts) -> SiteFacts:
    facts.releases["31072025-150000"] = ReleaseFacts("31072025-150000", Manifest(HEAD, "main", REPO, KEY, "updating"))
    return facts


def _servers(case: Case, shape: str, which: tuple[str, ...] | None) -> tuple[str, ...]:
    servers = SHAPES[shape]
    if which is None:
        return ()
    if "all" in which:
        return servers
    return tuple(s for s in servers if ("first" if s == servers[0] else "rest") in which)


def _shaped() -> list[Any]:
    """Every case for one server and for two; a case about servers that differ only for two."""
    return [pytest.param(case, shape, id=f"{case.id}[{shape}]") for case in CASES for shape in SHAPES
            if shape == "two" or case.rest is None]


@pytest.mark.parametrize(("case", "shape"), _shaped())
def test_rollout(case: Case, shape: str) -> None:
    servers = SHAPES[shape]
    site = declare(**case.site) if shape == "one" else fleet(servers, **case.site)
    facts = {s: (case.first() if s == servers[0] or case.rest is None else case.rest()) for s in servers}
    memory = {s: FailureMemory({(HEAD, KEY): "script exited 1"} if case.memory_first and s == servers[0] else {})
              for s in servers}
    fresh = parse_release(case.fresh_after) if case.fresh_after else None
    rollout = plan_rollout(site, facts, BranchHead(HEAD), memory, NOW, clean_interrupted=True, fresh_after=fresh,
                           reload_owed=case.reload_owed)
    assert rollout.halted == case.halted, rollout
    assert rollout.sync == case.sync, rollout
    if case.health is not None:
        assert rollout.health == case.health
    if case.release is not None:
        assert rollout.desired_release == case.release
    build_on = _servers(case, shape, case.build_on)
    assert (rollout.build.servers if rollout.build else ()) == build_on, rollout.build
    if rollout.build is not None:
        assert rollout.build == Build(case.release or "", HEAD, rollout.build.reason, build_on)
        assert rollout.build.reason in DeployReason
    assert rollout.once == (RunOnce(rollout.desired_release or "", servers[0]) if case.once else None)
    switch_on = _servers(case, shape, case.switch_on)
    assert (rollout.switch.servers if rollout.switch else ()) == switch_on, rollout.switch
    if rollout.switch is not None:
        assert rollout.switch.reason == case.reason
        assert set(rollout.switch.previous) == set(switch_on)
    for s in servers:
        which = "first" if s == servers[0] else "rest"
        assert tuple(type(a) for a in rollout.prepare.get(s, ())) == case.prepare.get(which, ()), (s, rollout.prepare)
    if case.halted:
        assert not (rollout.build or rollout.once or rollout.switch), "a halted rollout moves nothing"


def test_a_fleet_of_one_is_the_same_rollout_as_its_plan() -> None:
    """`plan_site` is the one-server view of `plan_rollout`, not a second planner."""
    from reconciler.core.rollout import plan_site

    site = declare()
    facts = server(ok(R3, OLD), active=R3)
    rollout = plan_rollout(site, {"web-1": facts}, BranchHead(HEAD), {"web-1": FailureMemory()}, NOW)
    assert plan_site(site, facts, BranchHead(HEAD), FailureMemory(), NOW) == rollout.plan("web-1")
    assert dataclasses.replace(rollout).servers == ("web-1",)


def test_messages_name_the_server_only_when_there_are_many() -> None:
    facts = SiteFacts(DOMAIN, BASE)
    facts.note_problem("manifest too large")
    one = plan_rollout(declare(), {"web-1": facts}, BranchHead(HEAD), {"web-1": FailureMemory()}, NOW)
    two = plan_rollout(fleet(("web-1", "web-2")), {"web-1": server(), "web-2": facts}, BranchHead(HEAD),
                       {"web-1": FailureMemory(), "web-2": FailureMemory()}, NOW)
    assert (one.sync, one.message) == (Sync.UNKNOWN, "manifest too large")
    assert (two.sync, two.message) == (Sync.UNKNOWN, "web-2: manifest too large")


def _sick(name: str) -> ReleaseFacts:
    return ReleaseFacts(name, Manifest(HEAD, "main", REPO, KEY, "failed",
                                       message="health check failed after switch: HTTP 500"))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_forgiven_health_failure_is_checked_again_never_rebuilt(shape: str) -> None:
    """A release whose build succeeded and whose health check failed, once `retry` forgave it:
    live (a first deploy) it is switched again on every server with nothing to return to;
    switched back from, it is switched to; either way without a build."""
    servers = SHAPES[shape]
    site = fleet(servers)
    forgiven = {s: FailureMemory(rechecks=frozenset({R4})) for s in servers}
    live = plan_rollout(site, {s: server(_sick(R4), active=R4) for s in servers}, BranchHead(HEAD), forgiven, NOW)
    assert live.build is None and live.switch is not None and live.switch.release == R4
    assert live.switch.reason == SwitchReason.RETRY and live.switch.servers == servers
    assert dict(live.switch.previous) == dict.fromkeys(servers)
    back = plan_rollout(site, {s: server(ok(R3, OLD), _sick(R4), active=R3) for s in servers}, BranchHead(HEAD),
                        forgiven, NOW)
    assert back.build is None and back.switch is not None and back.switch.release == R4
    assert dict(back.switch.previous) == dict.fromkeys(servers, R3)
    # Not forgiven (no `retry`), or failed in its build: rebuilt after `retry`, as before.
    built = plan_rollout(site, {s: server(ok(R3, OLD), failed(R4), active=R3) for s in servers}, BranchHead(HEAD),
                         {s: FailureMemory() for s in servers}, NOW)
    assert built.build is not None and built.build.release == NOW_NAME


@pytest.mark.parametrize("shape", ["one", "two"])
def test_whether_the_app_repository_answered_is_part_of_the_verdict(shape: str) -> None:
    """The ref lookup answered (the site moves towards its head), got no answer from the
    repository's host (Unknown, `head_reached` False: on-call hears of the repository), or was
    not asked (a pin: None)."""
    servers = ("web-1",) if shape == "one" else ("web-1", "web-2")
    facts = {s: server(ok(R3, OLD), active=R3) for s in servers}
    memory = {s: FailureMemory() for s in servers}
    site = fleet(servers) if shape == "two" else declare()
    answered = plan_rollout(site, facts, BranchHead(HEAD), memory, NOW)
    assert answered.head_reached is True and answered.plan().head_reached is True
    silent = plan_rollout(site, facts, BranchHead(None, "ssh: connect to host x: Connection refused",
                                                 unreachable=True), memory, NOW)
    assert (silent.sync, silent.head_reached) == (Sync.UNKNOWN, False)
    absent = plan_rollout(site, facts, BranchHead(None, "branch 'main' not found in x"), memory, NOW)
    assert (absent.sync, absent.head_reached) == (Sync.UNKNOWN, None)  # the host answered: no outage
    pinned = fleet(servers, pin=R3) if shape == "two" else declare(pin=R3)
    assert plan_rollout(pinned, facts, None, memory, NOW).head_reached is None



# --- a site's env file (sites.d/<domain>.env.age) ---------------------------------------------


def _with_env(shape: str, text: str = "A=1\n", **fields: Any) -> SiteDeclaration:
    from reconciler.core.site_env import SiteEnv
    return fleet(SHAPES[shape], reload="true", **fields).with_env(SiteEnv(text))


def _live(digest: str | None) -> SiteFacts:
    facts = server(ok(R4), active=R4)
    facts.env_digest = digest
    return facts


@pytest.mark.parametrize("shape", SHAPES)
def test_env_differing_on_one_server_is_written_there_then_reloaded(shape: str) -> None:
    from reconciler.core.plan import ENV_CHANGED, WriteEnv
    site = _with_env(shape)
    assert site.env is not None
    digest = site.env.digest
    facts = {s: _live(digest) for s in SHAPES[shape]}
    last = SHAPES[shape][-1]
    facts[last] = _live("f" * 64)
    rollout = plan_rollout(site, facts, BranchHead(HEAD), {}, NOW)
    assert rollout.prepare[last] == (WriteEnv(digest), Reload(R4, ENV_CHANGED))
    assert all(rollout.prepare[s] == () for s in SHAPES[shape] if s != last)
    assert rollout.build is None and rollout.switch is None and rollout.sync == Sync.OUT_OF_SYNC
    synced = plan_rollout(site, {s: _live(digest) for s in SHAPES[shape]}, BranchHead(HEAD), {}, NOW)
    assert synced.sync == Sync.SYNCED and not synced.changes


@pytest.mark.parametrize("shape", SHAPES)
def test_env_change_redeploy_builds_a_fresh_release_everywhere(shape: str) -> None:
    from reconciler.core.plan import WriteEnv
    site = _with_env(shape, env_change="redeploy")
    assert site.env is not None
    rollout = plan_rollout(site, {s: _live(None) for s in SHAPES[shape]}, BranchHead(HEAD), {}, NOW)
    assert rollout.build is not None and rollout.build.servers == SHAPES[shape]
    assert all(rollout.prepare[s] == (WriteEnv(site.env.digest),) for s in SHAPES[shape])


@pytest.mark.parametrize("shape", SHAPES)
def test_a_site_without_an_env_file_plans_as_before(shape: str) -> None:
    site = fleet(SHAPES[shape])
    facts = {s: _live("f" * 64) for s in SHAPES[shape]}
    rollout = plan_rollout(site, facts, BranchHead(HEAD), {}, NOW)
    assert rollout.sync == Sync.SYNCED and not rollout.changes


def test_an_empty_or_missing_shared_env_is_a_first_write_not_drift() -> None:
    """The layout's empty placeholder (or no file) is written without the "drift" mark; a file
    with other content is drift."""
    from reconciler.core.plan import WriteEnv
    from reconciler.core.site_env import EMPTY_DIGEST
    site = _with_env("one")
    marks = []
    for digest in (None, EMPTY_DIGEST, "f" * 64):
        rollout = plan_rollout(site, {"web-1": _live(digest)}, BranchHead(HEAD), {}, NOW)
        writes = [a for a in rollout.prepare["web-1"] if isinstance(a, WriteEnv)]
        marks.append(writes[0].replaces)
    assert marks == [False, False, True]
R1, R2 = "31122024-235959", "15012025-080000"  # older than R3
MORNING_FREEZE = Window.model_validate({"kind": "deny", "hours": "00:00-12:00", "sites": ["*.example.com"]})
FREEZE_MESSAGE = "held by window until Fri 12:00 UTC"  # NOW is Friday 09:12 UTC


@pytest.mark.parametrize("shape", SHAPES)
def test_a_deploy_a_window_holds_is_not_built_and_the_live_release_is_kept_in_order(shape: str) -> None:
    """A new commit while a deny window is open: no build, no switch, OutOfSync saying until when;
    the live release's drifted shared links are relinked and old releases pruned all the same."""
    servers = SHAPES[shape]
    site = fleet(servers, keep=1)
    facts = {s: _unlinked(server(ok(R1, OLD), ok(R2, OLD), ok(R3, OLD), active=R3)) for s in servers}
    memory = {s: FailureMemory() for s in servers}
    free = plan_rollout(site, facts, BranchHead(HEAD), memory, NOW)
    assert free.build is not None and free.hold is None, "without the window it deploys"
    held = plan_rollout(site, facts, BranchHead(HEAD), memory, NOW, windows=[MORNING_FREEZE])
    assert held.build is None and held.once is None and held.switch is None and not held.halted
    assert (held.sync, held.message, held.desired_commit, held.desired_release) == (
        Sync.OUT_OF_SYNC, FREEZE_MESSAGE, HEAD, R3)
    assert held.hold is not None and held.hold.until == NOW.replace(hour=12, minute=0, second=0)
    assert {s: tuple(type(a) for a in held.prepare[s]) for s in servers} == dict.fromkeys(servers, (Relink,))
    assert dict(held.prune) == dict.fromkeys(servers, (R1, R2))
    after = plan_rollout(site, facts, BranchHead(HEAD), memory, NOW.replace(hour=12, minute=0),
                         windows=[MORNING_FREEZE])
    assert after.build is not None and after.hold is None, "the window closed: it deploys"


@pytest.mark.parametrize("shape", SHAPES)
def test_a_first_deploy_a_window_holds_only_provisions(shape: str) -> None:
    servers = SHAPES[shape]
    held = plan_rollout(fleet(servers), {s: server(provisioned=False, shared=False) for s in servers},
                        BranchHead(HEAD), {s: FailureMemory() for s in servers}, NOW, windows=[MORNING_FREEZE])
    assert held.halted and held.build is None and held.switch is None
    assert (held.sync, held.message, held.desired_commit) == (Sync.OUT_OF_SYNC, FREEZE_MESSAGE, HEAD)
    assert {s: tuple(type(a) for a in held.prepare[s]) for s in servers} == dict.fromkeys(servers, (Provision,))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_window_holds_the_switch_back_to_the_branch_build_but_not_a_pin_unless_it_says_so(shape: str) -> None:
    servers = SHAPES[shape]
    memory = {s: FailureMemory() for s in servers}
    built = {s: server(ok(R3, OLD), ok(R4), active=R3) for s in servers}
    forward = plan_rollout(fleet(servers), built, BranchHead(HEAD), memory, NOW, windows=[MORNING_FREEZE])
    assert forward.switch is None and forward.message == FREEZE_MESSAGE
    live = {s: server(ok(R3, OLD), ok(R4), active=R4) for s in servers}
    pinned = plan_rollout(fleet(servers, pin=R3), live, None, memory, NOW, windows=[MORNING_FREEZE])
    assert pinned.switch is not None and pinned.switch.release == R3 and pinned.switch.reason == SwitchReason.ROLLBACK
    strict = MORNING_FREEZE.model_copy(update={"pins": "hold"})
    held = plan_rollout(fleet(servers, pin=R3), live, None, memory, NOW, windows=[strict])
    assert held.switch is None and (held.sync, held.message) == (Sync.OUT_OF_SYNC, FREEZE_MESSAGE)


@pytest.mark.parametrize("shape", SHAPES)
def test_an_override_lets_the_held_deploy_through_and_says_so(shape: str) -> None:
    servers = SHAPES[shape]
    facts = {s: server(ok(R3, OLD), active=R3) for s in servers}
    memory = {s: FailureMemory() for s in servers}
    free = plan_rollout(fleet(servers), facts, BranchHead(HEAD), memory, NOW)
    forced = plan_rollout(fleet(servers), facts, BranchHead(HEAD), memory, NOW, windows=[MORNING_FREEZE],
                          override_window=True)
    assert forced == dataclasses.replace(free, overrode_window=True) and forced.overrode_window
    # Nothing held, nothing overridden: history has nothing to say about windows.
    open_now = plan_rollout(fleet(servers), facts, BranchHead(HEAD), memory, NOW.replace(hour=13),
                            windows=[MORNING_FREEZE], override_window=True)
    assert open_now.build is not None and not open_now.overrode_window
