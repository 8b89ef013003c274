"""fair: many servers' sites all deploying at once (one app commit moves them all), with the
global `concurrency` shared fairly between servers (engine/fairness.py) against the FIFO
semaphore it replaced, run on the same servers in the same process.

Setup: `servers` real sshds on 127.0.0.1 (each its own process and SSH connection, so each its
own session cap), `per_server` sites on each, every one a first deploy whose script records its
start and end on the "server" (this machine) and sleeps `hold` seconds, so the time a slot is held
is mostly the script's. One pass (as `reconciler reconcile` runs it), once per limiter.

Reported per limiter: the time until every site is live, deploys per minute, the ratio to the
ideal (sites / min(concurrency, servers x per-server cap) rounds of one deploy, the one deploy
measured alone in the same run), and starvation: when each server's first deploy started and
its last one ended (the worst server's). Baseline: the FIFO semaphore, same servers, same run.
"""

from __future__ import annotations

import asyncio
import math
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

from bench import use_git_identity
from reconciler.config import Settings
from reconciler.engine.converge import Reconciler, SlotKey
from reconciler.engine.store import Store
from reconciler.remote.transport.ssh import MAX_SESSIONS
from tests.support import make_app_repo, make_decl_repo, toml_value
from tests.support.repos import git
from tests.support.sshd import SshServer, start_sshd


class FifoLimiter:
    """The limit before fair dispatch: one asyncio.Semaphore, woken in arrival order, blind to
    servers. Same interface as FairLimiter where the Reconciler uses it."""

    def __init__(self, concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)

    def slot(self, key: SlotKey) -> AbstractAsyncContextManager[bool]:
        return self._semaphore

    def reconfigure(self, concurrency: int) -> None:
        self._semaphore = asyncio.Semaphore(concurrency)


@dataclass
class Run:
    name: str
    wall: float                                # pass start -> every site live
    first_start: dict[str, float]              # per server, seconds after the pass started
    last_end: dict[str, float]
    synced: int


def _declare(decl: Path, app: Path, base: Path, servers: list[SshServer], per_server: int, log: Path,
             hold: float, tag: str) -> None:
    for index, server in enumerate(servers):
        for n in range(per_server):
            domain = f"s{index}n{n}.{tag}.bench.example.com"
            script = (f'echo "{index} start $(date +%s.%N)" >> "{log}"\nsleep {hold}\n'
                      f'echo "{index} end $(date +%s.%N)" >> "{log}"\n')
            fields = {"server": server.destination, "base_path": str(base), "repository": str(app), "script": script}
            (decl / "sites.d" / f"{domain}.toml").write_text(
                "".join(f"{key} = {toml_value(value)}\n" for key, value in fields.items()))
    git(decl, "add", "-A")
    git(decl, "commit", "-q", "-m", f"declare {tag}")


def _one_pass(tmp: Path, servers: list[SshServer], app: Path, per_server: int, concurrency: int, hold: float,
              name: str, limiter: Callable[[int], FifoLimiter] | None) -> Run:
    work = tmp / name
    work.mkdir()
    decl, base, log = make_decl_repo(work / "decl"), work / "srv", work / "starts"
    base.mkdir()
    _declare(decl, app, base, servers, per_server, log, hold, name)
    settings = Settings(repo=decl, state_dir=work / "state", concurrency=concurrency,
                        identity_file=servers[0].identity_file, known_hosts=servers[0].known_hosts)

    async def go() -> int:
        reconciler = Reconciler(settings, Store(settings.db_path))
        if limiter is not None:
            reconciler._limit = limiter(concurrency)  # type: ignore[assignment]  # the baseline
        try:
            outcomes = await reconciler.run_pass()
        finally:
            await reconciler.close()
            reconciler.store.close()
        return sum(1 for o in outcomes if o.sync == "Synced")

    started = time.time()
    synced = asyncio.run(go())
    wall = time.time() - started
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for line in log.read_text().splitlines():
        server, what, at = line.split()
        offset = float(at) - started
        if what == "start":
            first[server] = min(first.get(server, offset), offset)
        else:
            last[server] = max(last.get(server, offset), offset)
    return Run(name, wall, first, last, synced)


def main(servers: int = 4, per_server: int = 8, concurrency: int = 8, hold: float = 1.0) -> None:
    use_git_identity()
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sshds = [start_sshd(tmp / f"sshd-{i}") for i in range(servers)]
        try:
            # One client key and known_hosts for all: every sshd knows every key (as ServerPair does).
            known = "".join(s.known_hosts_line for s in sshds)
            keys = "".join(Path(f"{s.identity_file}.pub").read_text() for s in sshds)
            for s in sshds:
                s.known_hosts.write_text(known)
                s.authorized_keys.write_text(keys)
            app = make_app_repo(tmp / "app")
            alone = _one_pass(tmp, sshds[:1], app, 1, concurrency, hold, "alone", None)
            fair = _one_pass(tmp, sshds, app, per_server, concurrency, hold, "fair", None)
            fifo = _one_pass(tmp, sshds, app, per_server, concurrency, hold, "fifo", FifoLimiter)
        finally:
            for s in sshds:
                s.stop()
    sites = servers * per_server
    width = min(concurrency, servers * MAX_SESSIONS)
    ideal = math.ceil(sites / width) * alone.wall
    print(f"fair: one pass deploying {sites} sites at once, {per_server} on each of {servers} real sshd servers; "
          f"concurrency {concurrency}, per-server session cap {MAX_SESSIONS}; each script holds its slot {hold:.1f} s")
    print(f"baseline: one deploy alone (same servers, same run) {alone.wall:.2f} s; ideal for {sites} sites: "
          f"{math.ceil(sites / width)} rounds of it = {ideal:.2f} s")
    print(f"{'limiter':<26}{'all live':>10}{'deploys/min':>13}{'x ideal':>9}{'worst 1st start':>17}"
          f"{'worst last end':>16}{'synced':>8}")
    for run, label in ((fair, "fair (FairLimiter)"), (fifo, "baseline: FIFO semaphore")):
        print(f"{label:<26}{run.wall:>9.2f}s{sites / run.wall * 60:>13.0f}{run.wall / ideal:>8.2f}x"
              f"{max(run.first_start.values()):>16.2f}s{max(run.last_end.values()):>15.2f}s{run.synced:>5}/{sites}")
    print(f"worst server's first deploy starts {max(fifo.first_start.values()) / max(fair.first_start.values()):.1f}x "
          f"sooner with fair dispatch; all live in {fair.wall / fifo.wall:.2f}x the FIFO time")
    print("worst 1st start: seconds from the pass start until the last server to be served started its first "
          "deploy (starvation); x ideal: all live / ideal")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"fair bench total: {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
