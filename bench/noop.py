"""noop: the pass when everything is Synced, for 10 / 100 / 500 sites on 1 and on 5 real sshd servers.

Setup: one template site is really deployed over SSH by the reconciler; its layout (shared/ and
the release with its manifest) is then copied, hardlinked, to every benchmark site, with the site
symlink pointing at it, which is what a converged server looks like. Per configuration a first real
pass adopts that layout into a fresh database; then the measured passes run on the same Reconciler
(warm SSH connections, as in the daemon), and one more on a new Reconciler (connects first, as the
CLI does). Reported: wall time (median), SSH round trips per pass (commands issued through the
pool's transports) and database writes during the measured passes (sqlite total_changes of the
reconciler's connection, and PRAGMA data_version seen from a second connection).

Baselines, same run: a bare `ssh true` (new OpenSSH connection), one `true` on the reconciler's
warm connection, and the probe of a single site; every SSH command also pays the login shell's
rc files (the test sshd's own session home, tests/sshd.py), measured separately.
"""

from __future__ import annotations

import asyncio
import os
import shutil
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
from reconciler.config import Settings
from reconciler.core.facts import ProbeSite
from reconciler.core.layout import SitePaths, is_release
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store
from reconciler.remote.probe import gather
from tests.sshd import SshServer, start_sshd
from tests.support import git, make_app_repo, make_decl_repo, toml_value, write_site

SCRIPT = "true\n"
TEMPLATE = "template.bench.example.com"


def domain(n: int) -> str:
    return f"site{n:04d}.bench.example.com"


def _round_trips(reconciler: Reconciler) -> int:
    return reconciler.pool.round_trips


def _hardlink_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True, copy_function=os.link)


def build_layout(template_base: Path, base: Path, domains: list[str]) -> None:
    """Give every domain the template's converged layout: shared/, its one release, the site link."""
    source = SitePaths(str(template_base), TEMPLATE)
    release = next(p.name for p in Path(source.deployments).iterdir() if is_release(p.name))
    for name in domains:
        paths = SitePaths(str(base), name)
        Path(paths.deployments).mkdir(parents=True)
        _hardlink_tree(Path(source.shared), Path(paths.shared))
        _hardlink_tree(Path(source.release(release)), Path(paths.release(release)))
        os.symlink(paths.link_target(release), paths.site_link)


def write_sites(decl: Path, sites: list[tuple[str, dict[str, object]]]) -> None:
    """Declare every site in one commit (one commit per site would dominate the setup)."""
    for name, fields in sites:
        text = "".join(f"{key} = {toml_value(value)}\n" for key, value in fields.items())
        (decl / "sites.d" / f"{name}.toml").write_text(text)
    git(decl, "add", "-A")
    git(decl, "commit", "-q", "-m", f"declare {len(sites)} sites")


async def _one_pass(settings: Settings) -> list[SiteOutcome]:
    reconciler = Reconciler(settings, Store(settings.db_path))
    try:
        return await reconciler.run_pass()
    finally:
        await reconciler.close()
        reconciler.store.close()


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
    changes: int  # rows written by the measured passes
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
        for _ in range(passes):
            before = _round_trips(reconciler)
            cpu_before = time.process_time()
            elapsed, outcomes = await _run_pass(reconciler)
            cpu.append(time.process_time() - cpu_before)
            times.append(elapsed)
            trips.append(_round_trips(reconciler) - before)
            problems += _not_synced(outcomes)
        changes = reconciler.store.db.conn.total_changes - changes_before
        version_moved = watcher.execute("PRAGMA data_version").fetchone()[0] != version
    finally:
        await reconciler.close()
        reconciler.store.close()
    cold = Reconciler(settings, Store(settings.db_path))
    try:
        cold_time, outcomes = await _run_pass(cold)
        cold_trips = _round_trips(cold)
        problems += _not_synced(outcomes)
        cold_changes = cold.store.db.conn.total_changes
    finally:
        await cold.close()
        cold.store.close()
    version_moved = version_moved or watcher.execute("PRAGMA data_version").fetchone()[0] != version
    watcher.close()
    return Row(sites, servers, settle, times, cpu, trips, changes + cold_changes, version_moved, cold_time,
               cold_trips, problems)


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


def _median_run(command: list[str], samples: int) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(counts: tuple[int, ...] = (10, 100, 500), server_counts: tuple[int, ...] = (1, 5), passes: int = 3) -> None:
    total = time.perf_counter()
    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers: list[SshServer] = []
        try:
            for k in range(max(server_counts)):
                servers.append(start_sshd(tmp / f"sshd{k}"))
            # One key and one known_hosts file for all servers, as an operator's config has.
            key = Path(f"{servers[0].identity_file}.pub").read_text()
            for k in range(1, len(servers)):
                with open(tmp / f"sshd{k}" / "authorized_keys", "a") as handle:
                    handle.write(key)
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text("".join(s.known_hosts.read_text() for s in servers))
            ssh: dict[str, Any] = {"identity_file": servers[0].identity_file, "known_hosts": known_hosts}
            app = make_app_repo(tmp / "app")
            site: dict[str, Any] = {"repository": str(app), "script": SCRIPT, "keep": 1}

            started = time.perf_counter()
            decl = make_decl_repo(tmp / "decl-template")
            write_site(decl, TEMPLATE, server=servers[0].destination, base_path=str(tmp / "template"), **site)
            template_settings = Settings(repo=decl, state_dir=tmp / "state-template", **ssh)
            outcomes = asyncio.run(_one_pass(template_settings))
            if outcomes[0].sync != "Synced":
                raise RuntimeError(f"template deploy failed: {outcomes[0]}")
            most = max(counts)
            for server_count in server_counts:
                for k in range(server_count):
                    build_layout(tmp / "template", tmp / f"srv{server_count}-{k}",
                                 [domain(n) for n in range(most) if n % server_count == k])
            setup = time.perf_counter() - started

            base = asyncio.run(baselines(template_settings, servers[0], tmp / "template", app, 5))
            ssh_true = _median_run(["ssh", "-F", str(servers[0].ssh_config), "testserver", "true"], 5)
            # The test sshd gives sessions a home of their own (tests/sshd.py): its rc files.
            rc = servers[0].home / ".bashrc"
            rc_files = (_median_run(["bash", "-c", f". {rc}; true"], 5)
                        - _median_run(["bash", "--norc", "-c", "true"], 5)) if rc.exists() else 0.0

            for server_count in server_counts:
                for count in counts:
                    decl = make_decl_repo(tmp / f"decl-{server_count}-{count}")
                    write_sites(decl, [(domain(n), {"server": servers[n % server_count].destination,
                                                    "base_path": str(tmp / f"srv{server_count}-{n % server_count}"),
                                                    **site}) for n in range(count)])
                    settings = Settings(repo=decl, state_dir=tmp / f"state-{server_count}-{count}", **ssh)
                    rows.append(asyncio.run(measure(settings, count, server_count, passes)))
        finally:
            for server in servers:
                server.stop()

    print(f"noop: the no-op pass (everything Synced) over real sshd servers on 127.0.0.1; "
          f"median of {passes} warm passes")
    print(f"setup (template deploy over SSH + hardlinked layouts): {setup:.1f} s")
    print(f"{'sites':>6}{'servers':>8}{'adopt pass':>12}{'no-op pass':>12}{'our CPU':>9}{'cold pass':>11}"
          f"{'round trips':>13}{'per site':>10}{'db writes':>11}{'x probe':>9}")
    for r in rows:
        median = statistics.median(r.times)
        trips = "/".join(map(str, sorted({*r.trips, r.cold_trips})))
        writes = f"{r.changes}{'+dv' if r.data_version_moved else ''}"
        print(f"{r.sites:>6}{r.servers:>8}{r.settle:>11.2f}s{median:>11.2f}s{statistics.median(r.cpu):>8.2f}s"
              f"{r.cold:>10.2f}s{trips:>13}{median / r.sites * 1000:>8.1f}ms{writes:>11}"
              f"{median / base['probe']:>9.1f}")
    print(f"baseline: ssh true, new OpenSSH connection           {ssh_true * 1000:6.0f} ms")
    print(f"baseline: one `true` on the warm asyncssh connection {base['warm'] * 1000:6.0f} ms")
    print(f"baseline: probe of one site (one round trip, warm)   {base['probe'] * 1000:6.0f} ms")
    print(f"  of which every SSH command pays ~/.bashrc here     {rc_files * 1000:6.0f} ms (bash -c with vs --norc)")
    print("adopt pass: the first pass on a fresh database (writes rows); our CPU: this process's CPU time in a"
          " no-op pass (excludes the servers' side)")
    print("x probe: no-op pass / probe of one site; db writes: rows changed in the measured passes"
          " (+dv: PRAGMA data_version moved)")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
          " (other work on the machine inflates wall times)")
    for r in rows:
        if r.sites == 500 and r.servers == 5:
            median = statistics.median(r.times)
            print(f"target: 500 sites on 5 servers under 2 s: {median:.2f} s, {'met' if median < 2 else 'MISSED'}")
    for server_count in server_counts:
        seen = {t for r in rows if r.servers == server_count for t in [*r.trips, r.cold_trips]}
        verdict = "independent of site count" if len(seen) == 1 else "GROWS with site count"
        print(f"round trips on {server_count} server(s): {sorted(seen)} per pass, {verdict}")
    written = sum(r.changes for r in rows)
    moved = any(r.data_version_moved for r in rows)
    print(f"database writes in no-op passes: {written} rows{', data_version moved' if moved else ''} "
          f"(target 0): {'met' if not written and not moved else 'MISSED'}")
    for r in rows:
        for problem in r.problems[:5]:
            print(f"PROBLEM: {problem}")
    print(f"noop bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
