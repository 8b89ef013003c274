"""masschange: one app commit moves 500 sites across 50 real sshd servers (10 each) at once.

Setup (bench/fleet.py): 50 sshds, each its own process on 127.0.0.1; one template site really
deployed over SSH; its converged layout, with its `.repo` mirror, hardlinked to every site; all
sites declared in one commit, from one app repository. The daemon (`python -m reconciler run`,
`interval` an hour so nothing else moves) adopts them: all Synced. Then, for each `concurrency`
(the daemon's setting, applied by SIGHUP): one app commit, SIGHUP (a reload: a full pass now, as
the interval poll would run it), and a thread watches the 500 site symlinks on disk: the time
until every one names a new release, whose manifest is then checked to be the new commit.

Reported: time until all live, deploys per minute, and the ratio to the ideal. The ideal lets
min(concurrency, servers x the SSH session cap per connection) deploys run at once, each taking
the median single deploy, measured in the same run on one warm server (a Reconciler pass in this
process: probe, lock, deploy, unlock): ideal = ceil(sites / parallelism) x that. Per server, the
first and last of its sites to go live, to show whether a server's sites starved (all of one
server's sites live before another's first). SSH commands per deploy: counted by the reconciler
(`pool.round_trips`) for the single deploys, and by the servers themselves (sshd's VERBOSE log has
one "Starting session" line per command) for both. The app repository is a path on the servers,
so git opens no SSH connections of its own here. The machine's CPU use during the change is
printed too: on 2 cores the servers' work (sshd, git, the script) competes with the daemon's.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import use_git_identity
from bench.fleet import (
    Fleet,
    Layout,
    cpu_busy,
    deploy_template,
    domain,
    running_fleet,
    server_cpu,
    server_disk,
    sessions_started,
    write_sites,
)
from bench.watch_daemon import stop, synced, wait_quiet
from reconciler.config import Settings
from reconciler.core.layout import MANIFEST_NAME
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.remote.transport.ssh import MAX_SESSIONS
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site

SCRIPT = "true\n"
SINGLE = "single.bench.example.com"
COMMANDS_TARGET = 4  # issue 15: SSH commands per deploy besides git's own connections and the script


class LinkWatch:
    """Notes when each site symlink first names something else than it did at the start."""

    def __init__(self, links: list[Path], interval: float = 0.025) -> None:
        self.links = links
        self.before = [os.readlink(link) for link in links]
        self.changed: list[float | None] = [None] * len(links)
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = list(range(len(self.links)))
        while pending and not self._stop.is_set():
            now = time.perf_counter()
            still = []
            for i in pending:
                try:
                    moved = os.readlink(self.links[i]) != self.before[i]
                except OSError:
                    moved = False  # never happens with an atomic switch; not a change if it did
                if moved:
                    self.changed[i] = now
                else:
                    still.append(i)
            pending = still
            self._stop.wait(self._interval)

    def done(self) -> bool:
        return all(t is not None for t in self.changed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Single:
    seconds: float  # the whole pass: probe, lock, deploy, unlock
    deploy_ms: int  # the deploy alone, as the store records it
    trips: int  # SSH commands the reconciler sent in the pass
    sessions: int  # SSH commands the server ran in the pass
    cpu: float  # CPU seconds of the pass: this process's and the server's (sshd, shells, git, the script)
    sync: str


async def single_deploys(settings: Settings, app: Path, fleet: Fleet, samples: int) -> list[Single]:
    """`samples` deploys of one site on one warm server, each a new app commit and one pass."""
    reconciler = Reconciler(settings, Store(settings.db_path))
    results = []
    try:
        first = await reconciler.run_pass()  # the first deploy: connects, creates the site's mirror
        if first[0].sync != "Synced":
            raise RuntimeError(f"single site: first deploy failed: {first[0]}")
        for n in range(samples):
            app_commit(app, f"single v{n + 2}")
            trips, sessions = reconciler.pool.round_trips, sessions_started(fleet)
            cpu = time.process_time() + server_cpu(fleet.servers[0])
            started = time.perf_counter()
            outcome = (await reconciler.run_pass())[0]
            seconds = time.perf_counter() - started
            cpu = time.process_time() + server_cpu(fleet.servers[0]) - cpu
            row = reconciler.store.deployments(SINGLE)[0]
            results.append(Single(seconds, int(row["duration_ms"] or 0), reconciler.pool.round_trips - trips,
                                  sessions_started(fleet) - sessions, cpu, outcome.sync))
    finally:
        await reconciler.close()
        reconciler.store.close()
    return results


@dataclass
class Change:
    concurrency: int
    commit: str
    seconds: float | None  # trigger -> the last site live; None: not all went live
    live: list[float | None]  # per site, seconds after the trigger
    settled: float  # trigger -> the daemon idle again (unlocks, logs, rows written)
    sessions: int
    cpu_busy: float  # share of the machine's CPUs busy from the trigger to the last site live
    wrong: list[str] = field(default_factory=list)  # sites live on something else than the commit










def _live_commit(link: Path) -> str:
    try:
        return str(json.loads((link / MANIFEST_NAME).read_text())["commit"])
    except (OSError, ValueError, KeyError) as exc:
        return f"unreadable manifest: {exc}"


def _config(path: Path, decl: Path, state: Path, fleet: Fleet, concurrency: int) -> None:
    path.write_text(f'repo = "{decl}"\nstate_dir = "{state}"\ninterval = 3600\nconcurrency = {concurrency}\n'
                    + fleet.config_lines())


def mass_change(daemon: subprocess.Popen[bytes], log: Path, config: Path, decl: Path, state: Path, app: Path,
                fleet: Fleet, links: list[Path], concurrency: int, reloads: int, timeout: float) -> Change:
    """One app commit for every site, the daemon told by SIGHUP (with `concurrency` in its config)."""
    _config(config, decl, state, fleet, concurrency)
    commit = app_commit(app, f"mass change at concurrency {concurrency}")
    watch = LinkWatch(links)
    sessions = sessions_started(fleet)
    busy, total = cpu_busy()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    daemon.send_signal(signal.SIGHUP)
    try:
        while not watch.done() and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.05)
        busy_now, total_now = cpu_busy()
    finally:
        watch.close()
    while log.read_text(errors="replace").count("configuration reloaded") <= reloads and time.monotonic() < deadline:
        time.sleep(0.05)
    wait_quiet(daemon.pid, deadline)
    settled = time.perf_counter() - started
    live = [None if t is None else t - started for t in watch.changed]
    done = [t for t in live if t is not None]
    wrong = [f"{link.name}: {got[:12]}" for link in links if (got := _live_commit(link)) != commit]
    return Change(concurrency, commit, max(done) if len(done) == len(live) else None,
                  live, settled, sessions_started(fleet) - sessions,
                  (busy_now - busy) / max(total_now - total, 1e-9), wrong)


def _per_server(change: Change, servers: int) -> list[tuple[float, float]]:
    """(first, last) site live per server, seconds after the trigger (servers with all sites live)."""
    spans = []
    for k in range(servers):
        times = [t for n, t in enumerate(change.live) if n % servers == k]
        if times and all(t is not None for t in times):
            done = [t for t in times if t is not None]
            spans.append((min(done), max(done)))
    return spans


def _starved(spans: list[tuple[float, float]]) -> int:
    """Servers whose first site went live only after every site of another server was live."""
    if not spans:
        return 0
    earliest_last = min(last for _, last in spans)
    return sum(1 for first, _ in spans if first > earliest_last)


def _q(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]:.1f} / {statistics.median(ordered):.1f} / {ordered[-1]:.1f} s"


def main(sites: int = 500, servers: int = 50, concurrency: tuple[int, ...] = (8, 32), samples: int = 5,
         timeout: float = 300.0) -> None:
    total = time.perf_counter()
    use_git_identity()
    changes: list[Change] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name, server_disk(Path(tmp_name) / "disk") as (disk, disk_kind), \
            running_fleet(Path(tmp_name), servers, log_sessions=True) as fleet:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        app = make_app_repo(tmp / "app")
        site: dict[str, Any] = {"repository": str(app), "script": SCRIPT}
        layout = Layout.of(deploy_template(tmp, disk, fleet, site), mirror=True)
        for k in range(servers):
            layout.copy_to(disk / f"srv-{k}", [domain(n) for n in range(sites) if n % servers == k])
        decl = make_decl_repo(tmp / "decl")
        write_sites(decl, [(domain(n), {"server": fleet.servers[n % servers].destination,
                                        "base_path": str(disk / f"srv-{n % servers}"), **site}) for n in range(sites)])
        links = [disk / f"srv-{n % servers}" / domain(n) for n in range(sites)]
        setup = time.perf_counter() - started

        # The single deploys: one site on the first server, its own app repository (the fleet's must not move).
        single_app = make_app_repo(tmp / "app-single")
        single_decl = make_decl_repo(tmp / "decl-single")
        write_site(single_decl, SINGLE, server=fleet.servers[0].destination, base_path=str(disk / "single"),
                   repository=str(single_app), script=SCRIPT)
        singles = asyncio.run(single_deploys(Settings(repo=single_decl, state_dir=tmp / "state-single", **fleet.ssh),
                                             single_app, fleet, samples))
        problems += [f"single deploy: {s.sync}" for s in singles if s.sync != "Synced"]

        state = tmp / "state"
        config = tmp / "reconciler.toml"
        _config(config, decl, state, fleet, concurrency[0])
        log = tmp / "daemon.log"
        adopt_started = time.perf_counter()
        with open(log, "wb") as err:
            daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "--config", str(config), "run"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + timeout
            while synced(state / "reconciler.db") < sites and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(0.2)
            wait_quiet(daemon.pid, deadline)
            adopted = time.perf_counter() - adopt_started
            if synced(state / "reconciler.db") < sites:
                raise RuntimeError(f"only {synced(state / 'reconciler.db')}/{sites} sites Synced after adoption: "
                                   + " | ".join(log.read_text(errors="replace").splitlines()[-5:]))
            for n, value in enumerate(concurrency):
                changes.append(mass_change(daemon, log, config, decl, state, app, fleet, links, value, n, timeout))
        finally:
            stop(daemon)
        problems += [line for line in log.read_text(errors="replace").splitlines()
                     if " ERROR " in line or "Traceback" in line][:5]

    single = statistics.median(s.seconds for s in singles)
    trips = statistics.median(s.trips for s in singles)
    single_sessions = statistics.median(s.sessions for s in singles)
    print(f"masschange: one app commit moves {sites} sites on {servers} real sshd servers ({sites // servers} each) "
          "at once; the daemon (`python -m reconciler run`) deploys them")
    print(f"setup: {servers} sshds in {fleet.started_in:.1f} s; template deploy and {sites} hardlinked layouts "
          f"(with the mirror) in {setup:.1f} s on {disk_kind}; the daemon's first pass adopted them in {adopted:.1f} s")
    print(f"baseline: a single deploy on one warm server (a whole pass: probe, lock, deploy, unlock), median of "
          f"{len(singles)}: {single * 1000:.0f} ms (the deploy step alone: "
          f"{statistics.median(s.deploy_ms for s in singles):.0f} ms)")
    print(f"SSH commands per deploy: {trips - 1:.0f} sent by the reconciler besides the pass's probe ({trips:.0f} in "
          f"the pass), {single_sessions:.0f} sessions seen by the server in the pass; target <= {COMMANDS_TARGET} "
          "besides git's own connections and the script (issue 15; the count above includes the script's)")
    cpu = statistics.median(s.cpu for s in singles)
    cores = os.cpu_count() or 1
    floor = sites * cpu / cores
    print(f"CPU per deploy (a single deploy's pass: this process's and the server's, sshd and all it ran): "
          f"{cpu * 1000:.0f} ms; CPU floor for {sites} deploys on this machine's {cores} CPUs: {floor:.1f} s")
    print(f"{'concurrency':>11}{'parallel':>9}{'all live':>10}{'deploys/min':>13}{'ideal':>9}{'x ideal':>9}"
          f"{'x floor':>9}{'first live':>12}{'settled':>9}{'CPU busy':>10}{'sessions/site':>15}")
    for change in changes:
        parallel = min(change.concurrency, servers * MAX_SESSIONS)
        ideal = math.ceil(sites / parallel) * single
        done = [t for t in change.live if t is not None]
        first = f"{min(done):.1f}s" if done else "-"
        if change.seconds is None:
            row = f"{'NOT ALL':>10}{'-':>13}{ideal:>8.1f}s{'-':>9}{'-':>9}"
        else:
            row = (f"{change.seconds:>9.1f}s{sites / change.seconds * 60:>13.0f}{ideal:>8.1f}s"
                   f"{change.seconds / ideal:>9.1f}{change.seconds / floor:>9.1f}")
        print(f"{change.concurrency:>11}{parallel:>9}{row}{first:>12}{change.settled:>8.1f}s"
              f"{change.cpu_busy * 100:>9.0f}%{change.sessions / sites:>15.1f}")
    print(f"parallel: min(concurrency, {servers} servers x {MAX_SESSIONS} SSH sessions per connection "
          "(reconciler/remote/transport/ssh.py MAX_SESSIONS)); ideal: ceil(sites / parallel) x the single deploy; "
          "x floor: all live / the CPU floor; "
          "all live: SIGHUP to the last site link switched to a new release; settled: until the daemon is idle again; "
          f"CPU busy: the machine's {os.cpu_count()} CPUs (servers included) while the sites went live; sessions/site: "
          "SSH commands the servers ran during the change, per site (probes included)")
    for change in changes:
        spans = _per_server(change, servers)
        starved = _starved(spans)
        print(f"concurrency {change.concurrency}: per server, first site live (min / median / max) "
              f"{_q([f for f, _ in spans])}; last site live {_q([last for _, last in spans])}; "
              f"span last - first {_q([last - f for f, last in spans])}")
        verdict = "no server starved" if not starved else "STARVED"
        print(f"concurrency {change.concurrency}: {starved} of {len(spans)} servers saw their first site live only "
              f"after every site of another server was live: {verdict}")
        if change.wrong:
            problems.append(f"concurrency {change.concurrency}: {len(change.wrong)} site(s) not live on "
                            f"{change.commit[:12]}: {', '.join(change.wrong[:5])}")
    print(f"The ideal assumes the deploys' own CPU is free; on this machine's {cores} CPUs the servers' side of every "
          "deploy (sshd sessions, git fetch and clone, the script) runs on the same CPUs as the daemon, so the CPU "
          "floor bounds it too (other work on the machine counts against both).")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"masschange bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    # python -m bench.masschange [SITES [SERVERS [CONCURRENCY,...]]]
    args = sys.argv[1:]
    main(*(int(a) for a in args[:2]), *((tuple(int(v) for v in args[2].split(",")),) if len(args) > 2 else ()))
