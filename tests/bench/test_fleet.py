"""The fleet benchmarks' own machinery (bench/fleet.py, bench/masschange.py): what they measure is
only as good as their setup. Real sshds, a real template deploy, real passes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bench.fleet import Layout, deploy_template, domain, running_fleet, sessions_started, write_sites
from bench.masschange import Change, _per_server, _starved
from reconciler.config import Settings
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store
from reconciler.remote.mirror import MIRROR_NAME
from tests.support import make_app_repo, make_decl_repo


async def _pass_counting(settings: Settings) -> tuple[list[SiteOutcome], int]:
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        outcomes = await reconciler.run_pass()
        return outcomes, reconciler.pool.round_trips
    finally:
        await reconciler.close()
        reconciler.store.close()


@pytest.mark.ssh
def test_copied_layouts_are_converged_sites_on_every_server(tmp_path: Path) -> None:
    """Sites given the template's layout on 3 concurrently started sshds are adopted as Synced
    with no action (nothing deployed), through one identity and one known_hosts file; the mirror's
    files git rewrites in place are copies, its objects hardlinks; and the servers' own count of
    SSH commands equals the reconciler's."""
    servers, sites = 3, 9
    with running_fleet(tmp_path, servers, log_sessions=True) as fleet:
        app = make_app_repo(tmp_path / "app")
        site: dict[str, object] = {"repository": str(app), "script": "true\n"}
        template = deploy_template(tmp_path, tmp_path / "disk", fleet, site)
        layout = Layout.of(template, mirror=True)
        for k in range(servers):
            layout.copy_to(tmp_path / f"srv-{k}", [domain(n) for n in range(sites) if n % servers == k])
        decl = make_decl_repo(tmp_path / "decl")
        write_sites(decl, [(domain(n), {"server": fleet.servers[n % servers].destination,
                                        "base_path": str(tmp_path / f"srv-{n % servers}"), **site})
                           for n in range(sites)])
        before = sessions_started(fleet)
        outcomes, trips = asyncio.run(_pass_counting(Settings(repo=decl, state_dir=tmp_path / "state", **fleet.ssh)))
        sessions = sessions_started(fleet) - before

    assert [(o.sync, o.actions) for o in outcomes] == [("Synced", [])] * sites
    assert trips == servers  # one probe per server, nothing else
    assert sessions == trips
    mirror = tmp_path / "srv-1" / "deployments" / domain(1) / MIRROR_NAME
    assert os.stat(mirror / "config").st_nlink == 1
    packs = list((mirror / "objects" / "pack").iterdir())
    assert packs and all(os.stat(p).st_nlink > 1 for p in packs)
    assert os.readlink(tmp_path / "srv-2" / domain(2)) == f"deployments/{domain(2)}/{layout.release}"


def _change(live: list[float | None]) -> Change:
    return Change(8, "0" * 40, None, live, 0.0, 0, 0.0)


@pytest.mark.parametrize(("live", "starved"), [
    # two servers (site n on server n % 2), interleaved: nobody waits for a whole other server
    ([1.0, 1.5, 2.0, 2.5], 0),
    # server 0's sites (0, 2) all live before server 1's first (1, 3): server 1 starved
    ([1.0, 3.0, 2.0, 4.0], 1),
    # equal moments are not starvation
    ([1.0, 2.0, 2.0, 3.0], 0),
])
def test_starvation_is_a_server_waiting_for_another_whole_server(live: list[float | None], starved: int) -> None:
    assert _starved(_per_server(_change(live), 2)) == starved


def test_a_server_with_a_site_not_live_has_no_span() -> None:
    assert _per_server(_change([1.0, None, 2.0, 3.0]), 2) == [(1.0, 2.0)]
