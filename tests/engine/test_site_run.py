"""What is known about one site while it converges (engine/site_run.py): its outcome carries the
steps already done under the label of all its servers, a site on many servers prefixes each
server's own words with that server's name, and its health is read from the first server's facts
(unknown before any were read). Pure: declarations and facts in memory."""

from __future__ import annotations

from reconciler.core.facts import ReleaseFacts, SiteFacts
from reconciler.core.plan import Prune
from reconciler.core.status import Health, Sync
from reconciler.engine.outcome import Applied
from reconciler.engine.site_run import SiteRun
from tests.support import site_declaration

RELEASE = "06122026-120000"


def _facts(**fields: object) -> SiteFacts:
    return SiteFacts("shop.example.com", "/srv", **fields)  # type: ignore[arg-type]


def test_a_site_on_one_server_speaks_plainly() -> None:
    run = SiteRun(site_declaration(server="web-1"), None)
    assert not run.many and run.where == "web-1"
    assert run.on("web-1", "build failed") == "build failed"


def test_a_site_on_many_servers_names_the_server_in_its_words() -> None:
    run = SiteRun(site_declaration(servers=["web-1", "web-2"]), "c" * 40)
    assert run.many and run.where == "web-1, web-2"
    assert run.on("web-2", "build failed") == "web-2: build failed"


def test_the_outcome_carries_the_steps_done_so_far() -> None:
    run = SiteRun(site_declaration(servers=["web-1", "web-2"]), None)
    done = Applied(Prune((RELEASE,)))
    run.applied.append(done)
    outcome = run.outcome(Sync.FAILED, Health.DEGRADED, "web-2: unreachable", retry_after=5.0)
    assert (outcome.domain, outcome.server, outcome.sync, outcome.health) == \
        ("shop.example.com", "web-1, web-2", Sync.FAILED, Health.DEGRADED)
    assert outcome.applied == [done] and outcome.message == "web-2: unreachable" and outcome.retry_after == 5.0


def test_health_is_the_first_servers_and_unknown_before_any_facts() -> None:
    run = SiteRun(site_declaration(servers=["web-1", "web-2"]), None)
    assert run.health() == Health.UNKNOWN
    run.facts["web-1"] = _facts(path_kind="symlink", link_target=f"/srv/deployments/shop.example.com/{RELEASE}",
                                releases={RELEASE: ReleaseFacts(RELEASE)})
    run.facts["web-2"] = _facts()
    assert run.health() == Health.HEALTHY
    run.facts = {"web-2": _facts()}
    assert run.health() == Health.MISSING
