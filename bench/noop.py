"""noop: the pass when everything is Synced: 10 / 100 / 500 sites on 1 and on 5 real sshd servers,
and the fleet row, 5,000 sites on 50 (each server its own sshd process on 127.0.0.1).

Setup (bench/fleet.py): the sshds start concurrently; one template site is really deployed over
SSH by the reconciler; its layout (shared/ and the release with its manifest) is then recreated,
hardlinked, for every benchmark site, with the site symlink pointing at it, which is what a
converged server looks like; the sites are declared in one commit. Per configuration a first real
pass adopts that layout into a fresh database; then the measured passes run on the same Reconciler
(warm SSH connections, as in the daemon), and one more on a new Reconciler (connects first, as the
CLI does). Reported: wall time (median), this process's CPU time and CPU per site, SSH round trips
per pass (commands issued through the pool's transports) and database writes during the measured
passes (sqlite total_changes of the reconciler's connection, and PRAGMA data_version seen from a
second connection).

Baselines, same run: a bare `ssh true` (new OpenSSH connection), one `true` on the reconciler's
warm connection, and the probe of a single site. Every SSH command pays the login shell's rc
files: the test sshd gives sessions a home of their own with an empty .bashrc (tests/support/sshd.py), as
a plain server; what this machine's own ~/.bashrc would add is measured and printed beside it.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import GIT_IDENTITY
from bench.fleet import (
    TEMPLATE,
    TEMPLATE_DECL,
    TEMPLATE_STATE,
    Layout,
    deploy_template,
    domain,
    running_fleet,
    server_disk,
    write_sites,
)
from reconciler.config import Settings
from reconciler.core.facts import ProbeSite
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import OBSERVED_EVERY, Store
from reconciler.remote.probe import gather
from tests.support import make_app_repo, make_decl_repo
from tests.support.sshd import SshServer

SCRIPT = "true\n"
FLEET = ((5000, 50),)  # (sites, servers) rows measured beside the counts x server_counts grid
CPU_TARGET_US = 100.0  # issue 15: CPU per site in a no-op pass
WALL_TARGET = 2.0  # issue 15: a 5,000-site no-op pass on warm connections, seconds


def _round_trips(reconciler: Reconciler) -> int:
    return reconciler.pool.round_trips


async def _run_pass(reconciler: Reconciler) -> tuple[float, list[SiteOutcome]]:
    started = time.perf_counter()
    outcomes = await reconciler.run_pass()
    return time.perf_counter() - started, outcomes


def _not_synced(outcomes: list[SiteOutcome]) -> list[str]:
    return [f"{o.domain}: {o.sync} {o.message} {o.actions}" for o in outcomes if o.sync != "Synced" or o.actions]


@dataclass
class Row:
    sites: int
    servers: int
    settle: float  # the adopting first pass
    times: list[float]  # warm no-op passes
    cpu: list[float]  # this process's CPU time in each
    trips: list[int]
    changes: int  # rows written by the measured passes, besides the refreshes
    refreshes: int  # of those, servers' observed_at refreshed (at most once per server per OBSERVED_EVERY)
    data_version_moved: bool
    cold: float
    cold_trips: int
    problems: list[str] = field(default_factory=list)


async def measure(settings: Settings, sites: int, servers: int, passes: int) -> Row:
    """Adopting pass, then `passes` warm no-op passes, then one cold pass on a new Reconciler."""
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        settle, outcomes = await _run_pass(reconciler)
        problems = _not_synced(outcomes)
        watcher = sqlite3.connect(settings.db_path)
        version = watcher.execute("PRAGMA data_version").fetchone()[0]
        changes_before = reconciler.store.db.conn.total_changes
        times, trips, cpu = [], [], []
        refreshes = 0
        for _ in range(passes):
            before = _round_trips(reconciler)
            seen = _observations(watcher)
            cpu_before = time.process_time()
            elapsed, outcomes = await _run_pass(reconciler)
            cpu.append(time.process_time() - cpu_before)
            times.append(elapsed)
            trips.append(_round_trips(reconciler) - before)
            refreshes += _refreshed(seen, _observations(watcher))
            problems += _not_synced(outcomes)
        changes = reconciler.store.db.conn.total_changes - changes_before
        version_moved = watcher.execute("PRAGMA data_version").fetchone()[0] != version
    finally:
        await reconciler.close()
        reconciler.store.close()
    cold = Reconciler(settings, Store(settings.db_path))
    seen = _observations(watcher)
    try:
        cold_time, outcomes = await _run_pass(cold)
        cold_trips = _round_trips(cold)
        problems += _not_synced(outcomes)
        cold_changes = cold.store.db.conn.total_changes
    finally:
        await cold.close()
        cold.store.close()
    refreshes += _refreshed(seen, _observations(watcher))
    version_moved = version_moved or watcher.execute("PRAGMA data_version").fetchone()[0] != version
    watcher.close()
    return Row(sites, servers, settle, times, cpu, trips, changes + cold_changes - refreshes, refreshes,
               version_moved, cold_time, cold_trips, problems)


def _observations(db: sqlite3.Connection) -> dict[str, str]:
    """Each server's observed_at: the store refreshes it at most every OBSERVED_EVERY seconds, so
    passes further apart than that write one row per server (O(servers), by design)."""
    return dict(db.execute("select name, observed_at from servers").fetchall())


def _refreshed(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for name, moment in after.items() if before.get(name) != moment)


async def baselines(settings: Settings, server: SshServer, template_base: Path, app: Path,
                    samples: int) -> dict[str, float]:
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        transport = reconciler.pool.get(server.destination)
        await transport.run("true", timeout=30)  # connect
        warm, probe = [], []
        one = [ProbeSite(TEMPLATE, str(template_base))]
        for _ in range(samples):
            started = time.perf_counter()
            await transport.run("true", timeout=30)
            warm.append(time.perf_counter() - started)
            started = time.perf_counter()
            await gather(transport, one, [(str(app), "refs/heads/main")], timeout=30)
            probe.append(time.perf_counter() - started)
    finally:
        await reconciler.close()
        reconciler.store.close()
    return {"warm": statistics.median(warm), "probe": statistics.median(probe)}


def _median_run(command: list[str], samples: int, timeout: float | None = None) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def rc_cost(rc: Path, samples: int = 5) -> float | None:
    """Seconds that sourcing `rc` adds to a bash command; None when there is no such file or it
    hangs (pyenv's rehash lock can stall a login for 60 s: tests/support/sshd.py)."""
    if not rc.exists():
        return None
    try:
        with_rc = _median_run(["bash", "-c", '. "$0"; true', str(rc)], samples, timeout=20)
    except subprocess.TimeoutExpired:
        return None
    return max(with_rc - _median_run(["bash", "--norc", "-c", "true"], samples), 0.0)


def configurations(counts: tuple[int, ...], server_counts: tuple[int, ...],
                   fleet: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """(sites, servers) to measure: the grid, then the fleet rows not already in it."""
    grid = [(count, servers) for servers in server_counts for count in counts]
    return grid + [row for row in fleet if row not in grid]


def _cpu_us(row: Row) -> float:
    return statistics.median(row.cpu) / row.sites * 1e6


def main(counts: tuple[int, ...] = (10, 100, 500), server_counts: tuple[int, ...] = (1, 5), passes: int = 3,
         fleet: tuple[tuple[int, int], ...] = FLEET) -> None:
    """The grid counts x server_counts, plus the `fleet` rows ((sites, servers); () for none)."""
    total = time.perf_counter()
    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)
    configs = configurations(counts, server_counts, fleet)
    needed = {servers: max(sites for sites, s in configs if s == servers) for _, servers in configs}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name, server_disk(Path(tmp_name) / "disk") as (disk, disk_kind), \
            running_fleet(Path(tmp_name), max(needed)) as servers:
        tmp = Path(tmp_name)
        app = make_app_repo(tmp / "app")
        site: dict[str, Any] = {"repository": str(app), "script": SCRIPT, "keep": 1}
        started = time.perf_counter()
        template = deploy_template(tmp, disk, servers, site)
        deployed = time.perf_counter() - started
        started = time.perf_counter()
        layout = Layout.of(template)
        for server_count, most in needed.items():
            for k in range(server_count):
                mine = [domain(n) for n in range(most) if n % server_count == k]
                layout.copy_to(disk / f"srv{server_count}-{k}", mine)
        copied = time.perf_counter() - started
        layouts = sum(needed.values())

        settings = Settings(repo=tmp / TEMPLATE_DECL, state_dir=tmp / TEMPLATE_STATE, **servers.ssh)
        first = servers.servers[0]
        base = asyncio.run(baselines(settings, first, template, app, 5))
        ssh_true = _median_run(["ssh", "-F", str(first.ssh_config), "testserver", "true"], 5)
        session_rc = rc_cost(first.home / ".bashrc") or 0.0  # the test sshd's session home (empty .bashrc)
        own_rc = rc_cost(Path.home() / ".bashrc")

        for sites, server_count in configs:
            decl = make_decl_repo(tmp / f"decl-{server_count}-{sites}")
            write_sites(decl, [(domain(n), {"server": servers.servers[n % server_count].destination,
                                            "base_path": str(disk / f"srv{server_count}-{n % server_count}"),
                                            **site}) for n in range(sites)])
            settings = Settings(repo=decl, state_dir=tmp / f"state-{server_count}-{sites}", **servers.ssh)
            rows.append(asyncio.run(measure(settings, sites, server_count, passes)))

    print(f"noop: the no-op pass (everything Synced) over real sshd servers on 127.0.0.1; "
          f"median of {passes} warm passes")
    print(f"setup: {len(servers.servers)} sshds started in {servers.started_in:.1f} s (concurrently); template deploy "
          f"over SSH {deployed:.1f} s; {layouts} hardlinked layouts ({layout.files} files, {len(layout.dirs)} dirs "
          f"each) in {copied:.1f} s on {disk_kind}")
    soft, hard = servers.open_files
    print(f"limits: open files {soft}/{hard} (soft/hard) for one asyncssh connection per server; "
          f"{len(servers.servers)} sshd processes, each its own listener")
    print(f"{'sites':>6}{'servers':>8}{'adopt pass':>12}{'no-op pass':>12}{'our CPU':>9}{'CPU/site':>10}"
          f"{'cold pass':>11}{'round trips':>13}{'per site':>10}{'db writes':>14}{'x probe':>9}")
    for r in rows:
        median = statistics.median(r.times)
        trips = "/".join(map(str, sorted({*r.trips, r.cold_trips})))
        writes = f"{r.changes}{f'+{r.refreshes}obs' if r.refreshes else ''}{'+dv' if r.data_version_moved else ''}"
        print(f"{r.sites:>6}{r.servers:>8}{r.settle:>11.2f}s{median:>11.2f}s{statistics.median(r.cpu):>8.2f}s"
              f"{_cpu_us(r):>8.0f}us{r.cold:>10.2f}s{trips:>13}{median / r.sites * 1000:>8.2f}ms{writes:>14}"
              f"{median / base['probe']:>9.1f}")
    print(f"baseline: ssh true, new OpenSSH connection           {ssh_true * 1000:6.0f} ms")
    print(f"baseline: one `true` on the warm asyncssh connection {base['warm'] * 1000:6.0f} ms")
    print(f"baseline: probe of one site (one round trip, warm)   {base['probe'] * 1000:6.0f} ms")
    print(f"  of which every SSH command pays ~/.bashrc here     {session_rc * 1000:6.0f} ms (the test sshd's session "
          "home: an empty .bashrc, as on a plain server; bash -c with vs --norc)")
    own = "not measured (absent or hung)" if own_rc is None else f"{own_rc * 1000:.0f} ms"
    print(f"  this machine's own {Path.home() / '.bashrc'} would add {own} per SSH command (not paid above)")
    print("adopt pass: the first pass on a fresh database (writes rows); our CPU: this process's CPU time in a"
          " no-op pass (excludes the servers' side); CPU/site: our CPU / sites")
    print("x probe: no-op pass / probe of one site; db writes: rows changed in the measured passes"
          f" (+Nobs: N more that refreshed a server's observed_at, at most one per server per {OBSERVED_EVERY:.0f} s;"
          " +dv: PRAGMA data_version moved)")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
          " (other work on the machine inflates wall times)")
    for r in rows:
        median = statistics.median(r.times)
        if r.sites == 500 and r.servers == 5:
            print(f"target: 500 sites on 5 servers under 2 s: {median:.2f} s, {'met' if median < 2 else 'MISSED'}")
        if (r.sites, r.servers) in fleet:
            print(f"target: {r.sites} sites on {r.servers} servers, no-op pass < {WALL_TARGET:.0f} s wall on warm "
                  f"connections: {median:.2f} s, {'met' if median < WALL_TARGET else 'MISSED'}")
            print(f"target: {r.sites} sites on {r.servers} servers, <= {CPU_TARGET_US:.0f} us CPU per site: "
                  f"{_cpu_us(r):.0f} us, {'met' if _cpu_us(r) <= CPU_TARGET_US else 'MISSED'}"
                  f" (x{_cpu_us(r) / CPU_TARGET_US:.1f} the target)")
    for server_count in sorted(needed):
        seen = {t for r in rows if r.servers == server_count for t in [*r.trips, r.cold_trips]}
        verdict = "independent of site count" if len(seen) == 1 else "GROWS with site count"
        print(f"round trips on {server_count} server(s): {sorted(seen)} per pass, {verdict}")
    written = sum(r.changes for r in rows)
    refreshed = sum(r.refreshes for r in rows)
    moved = any(r.data_version_moved for r in rows)
    unexplained = moved and not refreshed
    print(f"database writes in no-op passes: {written} rows{', data_version moved' if unexplained else ''} "
          f"(target 0): {'met' if not written and not unexplained else 'MISSED'}"
          + (f"; besides {refreshed} servers' observed_at refreshes (O(servers) per {OBSERVED_EVERY:.0f} s, not per "
             "site)" if refreshed else ""))
    for r in rows:
        for problem in r.problems[:5]:
            print(f"PROBLEM: {problem}")
    print(f"noop bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


def _counts(arg: str) -> tuple[int, ...]:
    return tuple(int(v) for v in arg.split(",") if v)


if __name__ == "__main__":
    # python -m bench.noop [COUNTS [SERVER_COUNTS [PASSES [SITES/SERVERS,...]]]], e.g. 10,100 1,5 3 1000/10
    args = sys.argv[1:]
    main(*((_counts(args[0]),) if args else ()), *((_counts(args[1]),) if len(args) > 1 else ()),
         *((int(args[2]),) if len(args) > 2 else ()),
         *((tuple(tuple(int(v) for v in pair.split("/")) for pair in args[3].split(",") if pair),) if len(args) > 3
           else ()))
