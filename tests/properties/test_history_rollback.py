"""History's `can_rollback` is the rollback action's own rule, asked of the rows.

The dashboard offers Rollback where `history` says `can_rollback`; the action (`engine.actions.
rollback_target`) decides from fresh facts of each server. `history` cannot import the action (it
must start without the engine's heavy libraries), so it asks the rows the same questions. This
holds the two together: for any rows of a release on one, two or three servers (any status, on
disk or pruned, missing on a server, live anywhere), `can_rollback` is true exactly when
`rollback_target` accepts the release on every server of the site, given the facts the rows
describe. On today's main a release on two servers has a row per server, and the live release's
twin row says `can_rollback` (the dashboard's button that answers 409).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import ReleaseFacts, SiteFacts
from reconciler.core.layout import SitePaths
from reconciler.core.manifest import Manifest
from reconciler.engine.actions import rollback_target
from reconciler.engine.store import Store
from reconciler.engine.views import history_views
from reconciler.errors import NoRollbackTarget
from tests.properties.strategies import FAST

DOMAIN = "shop.example.com"
BASE = "/home/brokeforge"
RELEASE = "06122026-120000"
OTHER = "05122026-120000"  # the release live where the one asked about is not
STATUSES = ("success", "failed", "updating", "pending")

# Per server: its row of the release (status, still on disk) or none, and what is live there.
server_state = st.tuples(st.one_of(st.none(), st.tuples(st.sampled_from(STATUSES), st.booleans())),
                         st.sampled_from((RELEASE, OTHER, None)))


def _facts(row: tuple[str, bool] | None, live: str | None) -> SiteFacts:
    """What a probe of the server would say, if the rows are right."""
    facts = SiteFacts(DOMAIN, BASE, provisioned=True, shared=True)
    if row is not None and row[1]:
        facts.releases[RELEASE] = ReleaseFacts(RELEASE, Manifest("a" * 40, "main", "/srv/app.git", "k", row[0]))
    if live == OTHER:
        facts.releases[OTHER] = ReleaseFacts(OTHER, Manifest("b" * 40, "main", "/srv/app.git", "k", "success"))
    if live is not None and live in facts.releases:
        facts.link_target = SitePaths(BASE, DOMAIN).link_target(live)
    return facts


def _accepted(site: SiteDeclaration, facts: SiteFacts) -> bool:
    try:
        rollback_target(site, facts, RELEASE)
    except NoRollbackTarget:
        return False
    return True


def _store(servers: list[str], states: list[tuple[tuple[str, bool] | None, str | None]]) -> Store:
    """The rows a reconciler writes for those servers: a row per server that built the release,
    the site's row (its live release is the first server's), each server's live release."""
    store = Store.scratch()
    paths = SitePaths(BASE, DOMAIN)
    ids: dict[str, int] = {}
    for server, (row, _) in zip(servers, states, strict=True):
        if row is not None:
            ids[server] = store.start_deployment(
                site=DOMAIN, server=server, release=RELEASE, status=row[0], commit_sha="a" * 40, branch="main",
                deployment_path=paths.release(RELEASE) if row[1] else None, log_file_path=paths.log(RELEASE),
                started_at="2026-12-06T12:00:00Z")
    live = states[0][1]
    values: dict[str, Any] = {"server": ", ".join(servers), "active_release": live}
    if live == RELEASE and servers[0] in ids:
        values["active_deployment_id"] = ids[servers[0]]
    store.update_site(DOMAIN, **values)
    if len(servers) > 1:
        store.set_site_servers(DOMAIN, {server: (state[1], "") for server, state in zip(servers, states, strict=True)})
    return store


@FAST
@given(st.lists(server_state, min_size=1, max_size=3))
def test_can_rollback_is_the_actions_rule_on_every_server(states: list[tuple[Any, str | None]]) -> None:
    servers = [f"web-{n + 1}" for n in range(len(states))]
    if not any(row is not None for row, _ in states):
        return  # no row: history has no entry for it
    site = SiteDeclaration(domain=DOMAIN, base_path=BASE, repository="/srv/app.git",
                           **({"server": servers[0]} if len(servers) == 1 else {"servers": servers}))
    store = _store(servers, states)
    try:
        (entry,) = [e for e in history_views(store, DOMAIN) if e["release"] == RELEASE]
    finally:
        store.close()
    expected = all(_accepted(site, _facts(row, live)) for row, live in states)
    assert entry["can_rollback"] == expected, (states, entry)
    assert [s["server"] for s in entry["servers"]] == [s for s, (row, _) in zip(servers, states, strict=True) if row]
