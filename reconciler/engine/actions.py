"""What an operator asks for by hand, checked against the servers before anything is written:
`rollback` and `unpin` (a pin commit: the desired state changes in git, where automation cannot
undo it), and `retry` and `redeploy`. The CLI and the HTTP API both come through here, so they
refuse the same things with the same messages.

`retry` and `redeploy` are imperative on purpose, like Argo CD's Sync button and `flux
reconcile`: they change what the reconciler remembers (a failure) or asks of the next pass (a
fresh build), never the desired state. What should run stays in git; that it should run *again*
is an event, recorded in history with who asked, not a fact worth a commit.

Eligibility is read from fresh facts (one probe of the site's server), never from the database
alone: a release pruned or deleted by hand is gone even if history still lists it, and pinning
the release that is already live would freeze the site without moving it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import ProbeSite, ReleaseFacts, SiteFacts
from reconciler.core.layout import parse_release
from reconciler.core.reasons import RequestKind
from reconciler.core.status import DeployStatus
from reconciler.engine import pinning
from reconciler.engine.adoption import adopt
from reconciler.engine.converge import LAST_VERIFIED, Reconciler
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.upstream import Upstream
from reconciler.errors import NoRollbackTarget, NotApplicable, PinConflict, PushRejected, UnknownSite
from reconciler.remote.probe import gather


def rollback_target(site: SiteDeclaration, facts: SiteFacts, release: str | None) -> str:
    """The release a rollback pins: `release`, which must be a successful build on the server
    other than the live one, or by default the newest successful release older than the live one."""
    domain = site.domain
    if facts.problem is not None:
        raise NoRollbackTarget(f"{domain}: the server's state of this site cannot be trusted ({facts.problem}); "
                               "nothing committed")
    active = facts.active_release
    if release is not None:
        if parse_release(release) is None:
            raise NoRollbackTarget(f"{release!r} is not a release name (ddMMYYYY-HHMMSS)")
        found = facts.releases.get(release)
        if found is None:
            raise NoRollbackTarget(f"{domain}: release {release} is not on {site.server} (pruned or removed); "
                                   "nothing committed")
        if found.status != DeployStatus.SUCCESS:
            raise NoRollbackTarget(f"{domain}: release {release} is not a successful build ({found.status}); "
                                   "nothing committed")
        if _once_owed(found):
            raise NoRollbackTarget(f"{domain}: release {release} never completed its script_once (migrations); "
                                   "it never goes live. Nothing committed")
        if release == active:
            raise NoRollbackTarget(f"{domain}: release {release} is already the active release; pinning it would "
                                   "only stop the site following its branch. Nothing committed")
        return release
    if active is None:
        raise NoRollbackTarget(f"{domain}: no active release on {site.server} to roll back from")
    active_time = parse_release(active)
    older = [(t, r.name) for r in facts.releases.values() if r.status == DeployStatus.SUCCESS and not _once_owed(r)
             and (t := parse_release(r.name)) is not None and active_time is not None and t < active_time]
    if not older:
        raise NoRollbackTarget(f"{domain}: no successful release older than the active one ({active}) "
                               f"on {site.server}")
    return max(older)[1]


def _once_owed(release: ReleaseFacts) -> bool:
    """Its run-once step (script_once, recorded on the first server) never succeeded."""
    return release.manifest is not None and release.manifest.once_owed


async def site_facts(reconciler: Reconciler, site: SiteDeclaration, server: str | None = None) -> SiteFacts:
    """The site's facts on `server` (default: its first), probed now (no branch heads: only the
    layout is needed)."""
    transport = reconciler.pool.get(server or site.server)
    facts = await gather(transport, [ProbeSite(site.domain, site.base_path)], [],
                         timeout=reconciler.settings.command_timeout)
    return facts.sites[site.domain]


async def declared(reconciler: Reconciler, domain: str) -> SiteDeclaration:
    """The valid declaration of `domain` in the applied commit, else UnknownSite."""
    decls = await reconciler.load_async()
    site = decls.sites.get(domain)
    if site is None:
        if domain in decls.invalid:
            raise UnknownSite(f"{domain}: its declaration is invalid: {decls.invalid[domain].message}")
        raise UnknownSite(f"{domain}: no such site declared")
    return site


async def rollback(reconciler: Reconciler, domain: str, release: str | None,
                   author: str | None = None) -> tuple[str, str]:
    """Commit a pin to the chosen release; returns (release, commit id)."""
    await refresh(reconciler)
    site = await declared(reconciler, domain)
    target = rollback_target(site, await site_facts(reconciler, site), release)
    if len(site.targets) > 1:
        # A pin is two-phase: the release must be a successful build on every server.
        others = await asyncio.gather(*(site_facts(reconciler, site, server) for server in site.targets[1:]))
        lacking = [server for server, facts in zip(site.targets[1:], others, strict=True)
                   if (found := facts.releases.get(target)) is None or found.status != DeployStatus.SUCCESS]
        if lacking:
            raise NoRollbackTarget(f"{domain}: release {target} is not a successful build on {', '.join(lacking)}; "
                                   "nothing committed")
    return target, await commit_pin(reconciler, domain, target, author)


async def unpin(reconciler: Reconciler, domain: str, author: str | None = None) -> str:
    """Commit the removal of the site's pin; returns the commit id."""
    await refresh(reconciler)
    await declared(reconciler, domain)
    return await commit_pin(reconciler, domain, None, author)


async def apply_now(reconciler: Reconciler, domain: str) -> SiteOutcome:
    """A pin or unpin this process just committed, applied here, when no daemon runs to apply
    it: the daemon's own way for a pin that just landed (`rounds.converge_server`'s `eager`: the
    lock command re-checks the pin and switches, one round trip after the commit), on the
    connection the check before the commit opened. A site on many servers goes through the
    executor's all-or-nothing switch. NotApplicable when another shard's instance owns the site."""
    decls = await reconciler.load_async()
    site = reconciler.owned(decls).sites.get(domain)
    if site is None:
        why = reconciler.skipped.get(domain) or "its declaration is not in the applied commit"
        raise NotApplicable(f"{domain}: committed, not applied here: {why}")
    if len(site.targets) > 1:
        return await reconciler.converge_many(site, decls.commit)
    done = await reconciler.converge_server(site.server, [site], decls.commit, eager={domain})
    return done.outcomes[0]


PUSH_ATTEMPTS = 3


async def refresh(reconciler: Reconciler) -> None:
    """With declarations on a Git host: fetch first, so an action sees what the host has."""
    if reconciler.settings.repo_url is not None:
        await asyncio.to_thread(Upstream(reconciler.settings).fetch)


async def commit_pin(reconciler: Reconciler, domain: str, pin: str | None, author: str | None) -> str:
    """Write the pin commit (`committed`); when the branch moved on the Git host meanwhile, the same
    one-file edit is made on the new tip, unless the site's pin itself changed there (then refuse:
    someone else decided about this site)."""
    settings = reconciler.settings
    repo, branch = settings.local_repo, settings.branch

    def attempt(publish: pinning.Publish | None, verified: str | None) -> str:
        return pinning.set_pin(repo, branch, domain, pin, settings, author=author, publish=publish, verified=verified)

    return await committed(reconciler, attempt, lambda: pinning.current_pin(repo, branch, domain),
                           lambda before, now: f"{domain}: its pin changed on {settings.repo_url} meanwhile "
                                               f"({before or 'none'} -> {now or 'none'}); nothing was committed")


async def committed(reconciler: Reconciler, attempt: Callable[[pinning.Publish | None, str | None], str],
                    current: Callable[[], object], changed: Callable[[Any, Any], str]) -> str:
    """An operator's commit to the declarations (a pin, an env file): `attempt(publish, verified)`
    commits. Local repository: once (compare-and-swap on the branch). Git host: commit on the
    fetched tip and push; when the push is refused (the branch moved there), fetch and try again
    (bounded), unless `current()` (what the change is about) differs from before: then
    `changed(before, now)` says why nothing was committed. Under `require_signed` every attempt
    checks afresh that the tip it builds on is verified (`verified`)."""
    settings = reconciler.settings
    if settings.repo_url is None:
        # git and ssh-keygen (signing) run here: off the event loop, so the daemon's HTTP answers on.
        return await asyncio.to_thread(attempt, None, reconciler.store.meta(LAST_VERIFIED))
    upstream = Upstream(settings)
    before = current()
    for _ in range(PUSH_ATTEMPTS):
        try:
            return await asyncio.to_thread(attempt, upstream.push, reconciler.store.meta(LAST_VERIFIED))
        except PushRejected:
            await asyncio.to_thread(upstream.fetch)
            now = current()
            if now != before:
                raise PinConflict(changed(before, now)) from None
    raise PinConflict(f"{settings.branch} kept moving on {settings.repo_url}; tried {PUSH_ATTEMPTS} times, nothing "
                      "was committed: run the command again")


def _of_this_shard(reconciler: Reconciler, site: SiteDeclaration) -> SiteDeclaration:
    """`retry` and `redeploy` change what this instance remembers and asks of its own passes,
    which never look at another shard's site: refused there, nothing changed. (A pin is a commit,
    which the owning instance applies: rollback and unpin work from any instance.)"""
    why = reconciler.shard.skip_reason(site.targets)
    if why is not None:
        raise NotApplicable(f"{site.domain}: {why}; ask the instance of that shard")
    return site


async def retry(reconciler: Reconciler, domain: str, by: str) -> int:
    """Forget the site's remembered failures so the next pass builds again (a transient cause:
    a package mirror down, a migration lock). Returns how many failures were forgotten."""
    site = _of_this_shard(reconciler, await declared(reconciler, domain))
    store = reconciler.store
    adopt(store, domain, await site_facts(reconciler, site), server=site.server)  # every failed release has a row
    forgiven = store.forgive(domain)
    if not forgiven:
        raise NotApplicable(f"{domain}: nothing to retry (no remembered failure); "
                            "to build the current commit again use: reconciler redeploy " + domain)
    store.request(domain, RequestKind.RETRY, by)
    return forgiven


async def redeploy(reconciler: Reconciler, domain: str, by: str) -> None:
    """Ask the next pass to build the current commit again as a fresh release, even though a
    build exists (after a `.env` change, say). A remembered failure of it is forgotten too."""
    site = _of_this_shard(reconciler, await declared(reconciler, domain))
    if site.pin is not None:
        raise NotApplicable(f"{domain}: pinned to {site.pin}, so there is nothing to build; unpin it first")
    store = reconciler.store
    facts = await site_facts(reconciler, site)
    adopt(store, domain, facts, server=site.server)
    store.forgive(domain)
    # Fresh means named after every release there is now (new names always sort after them).
    existing = [(moment, name) for name in (*facts.releases, *facts.not_dirs)
                if (moment := parse_release(name)) is not None]
    store.request(domain, RequestKind.REDEPLOY, by, after=max(existing)[1] if existing else None)
