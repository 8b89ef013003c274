"""shard: what splitting a fleet over instances (`shard = "i/n"`) buys, over real sshd servers.

4 real sshds, each reached through 4 ssh_config Host aliases (web-1 .. web-16): 16 servers to the
shard hash, which goes by the server string. Sites are spread round-robin over the aliases; their
converged layouts are hardlinked from one real deploy, as in bench/noop. Each configuration gets
a fresh state dir, an adopting first pass, then warm no-op passes (bench/noop's `measure`).

Rows: the whole fleet on one instance (`1/1`, the baseline, same run), then every instance of
n = 2 and n = 3 measured alone: its sites, servers, warm pass wall time, its CPU per pass and
round trips. Ratios: the busiest instance's CPU against the whole (ideal 1/n), and its share of
the sites (the hash's balance over this fleet's server names). Also the filter's own cost: the
split of the parsed declarations per site, which every pass of a sharded instance pays.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import GIT_IDENTITY
from bench.fleet import TEMPLATE, Layout, domain, one_pass, write_sites
from bench.noop import Row, measure
from reconciler.config import Settings
from reconciler.core.shard import Shard, shard_of, split
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from tests.support import make_app_repo, make_decl_repo, write_site
from tests.support.sshd import SshServer, start_sshd

SSHDS = 4
ALIASES_PER_SSHD = 4
SCRIPT = "true\n"


def alias(k: int) -> str:
    return f"web-{k + 1}"


def ssh_config(servers: list[SshServer], path: Path) -> Path:
    lines = []
    for k in range(len(servers) * ALIASES_PER_SSHD):
        server = servers[k % len(servers)]
        lines.append(f"Host {alias(k)}\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n")
    path.write_text("".join(lines))
    return path


def split_cost(settings: Settings, shard: str, rounds: int = 20) -> float:
    """Seconds per site of `split` on freshly parsed declarations (no cache)."""
    store = Store(settings.db_path)
    try:
        decls = Reconciler(settings, store).load()
    finally:
        store.close()
    shard_of.cache_clear()
    started = time.process_time()
    for _ in range(rounds):
        split(decls, Shard.parse(shard))
    return (time.process_time() - started) / rounds / max(1, len(decls.sites))


def main(sites: int = 1000, passes: int = 3) -> None:
    total = time.perf_counter()
    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)
    results: list[tuple[str, int, int, Row]] = []  # (shard, its sites, its servers, row)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        servers: list[SshServer] = []
        try:
            for k in range(SSHDS):
                servers.append(start_sshd(tmp / f"sshd{k}"))
            key = Path(f"{servers[0].identity_file}.pub").read_text()
            for k in range(1, len(servers)):
                with open(tmp / f"sshd{k}" / "authorized_keys", "a") as handle:
                    handle.write(key)
            known_hosts = tmp / "known_hosts"
            known_hosts.write_text("".join(s.known_hosts.read_text() for s in servers))
            config = ssh_config(servers, tmp / "ssh_config")
            ssh: dict[str, Any] = {"identity_file": servers[0].identity_file, "known_hosts": known_hosts,
                                   "ssh_config": config}
            app = make_app_repo(tmp / "app")
            site: dict[str, Any] = {"repository": str(app), "script": SCRIPT, "keep": 1}

            template_decl = make_decl_repo(tmp / "decl-template")
            write_site(template_decl, TEMPLATE, server=alias(0), base_path=str(tmp / "template"), **site)
            outcomes = asyncio.run(one_pass(Settings(repo=template_decl, state_dir=tmp / "state-template", **ssh)))
            if outcomes[0].sync != "Synced":
                raise RuntimeError(f"template deploy failed: {outcomes[0]}")
            names = [alias(k) for k in range(SSHDS * ALIASES_PER_SSHD)]
            layout = Layout.of(tmp / "template")
            for k, name in enumerate(names):
                layout.copy_to(tmp / f"srv-{name}", [domain(n) for n in range(sites) if n % len(names) == k])
            decl = make_decl_repo(tmp / "decl")
            write_sites(decl, [(domain(n), {"server": names[n % len(names)],
                                            "base_path": str(tmp / f"srv-{names[n % len(names)]}"), **site})
                               for n in range(sites)])

            per_server = Counter(names[n % len(names)] for n in range(sites))
            for shard in ("1/1", "1/2", "2/2", "1/3", "2/3", "3/3"):
                mine = Shard.parse(shard)
                owned = [name for name in names if mine.owns((name,))]
                settings = Settings(repo=decl, state_dir=tmp / f"state-{shard.replace('/', 'of')}", shard=shard,
                                    **ssh)
                count = sum(per_server[name] for name in owned)
                results.append((shard, count, len(owned), asyncio.run(measure(settings, count, len(owned), passes))))
            cost = split_cost(Settings(repo=decl, state_dir=tmp / "state-split", shard="1/2", **ssh), "1/2")
        finally:
            for server in servers:
                server.stop()

    whole = results[0][3]
    whole_cpu = statistics.median(whole.cpu)
    print(f"shard: no-op passes of one instance per shard, {sites} sites on {SSHDS * ALIASES_PER_SSHD} servers "
          f"({SSHDS} sshds x {ALIASES_PER_SSHD} ssh_config aliases); median of {passes} warm passes")
    print(f"{'shard':>6}{'sites':>7}{'servers':>9}{'no-op pass':>12}{'our CPU':>9}{'per site':>10}"
          f"{'round trips':>13}{'x whole CPU':>13}")
    for shard, count, owned, row in results:
        cpu = statistics.median(row.cpu)
        trips = "/".join(map(str, sorted(set(row.trips))))
        print(f"{shard:>6}{count:>7}{owned:>9}{statistics.median(row.times):>11.2f}s{cpu:>8.3f}s"
              f"{cpu / max(1, count) * 1e6:>8.0f}us{trips:>13}{cpu / whole_cpu if whole_cpu else 0:>13.2f}")
    print(f"baseline: the whole fleet on one instance (1/1): our CPU {whole_cpu:.3f} s per no-op pass")
    for n in (2, 3):
        rows = [(count, statistics.median(row.cpu)) for shard, count, _, row in results if shard.endswith(f"/{n}")]
        busiest = max(cpu for _, cpu in rows)
        print(f"n = {n}: the busiest instance needs {busiest / whole_cpu:.2f}x the whole fleet's CPU (ideal "
              f"{1 / n:.2f}x); it owns {max(c for c, _ in rows) / sites:.0%} of the sites (the hash over "
              f"{SSHDS * ALIASES_PER_SSHD} server names); together the {n} cover {sum(c for c, _ in rows)} of "
              f"{sites} sites")
    print(f"the shard filter itself: {cost * 1e6:.2f} us per site per pass (split of freshly parsed declarations; "
          "the daemon reuses it while the declarations commit stays the same)")
    for _, _, _, row in results:
        for problem in row.problems[:5]:
            print(f"PROBLEM: {problem}")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"shard bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:2]))
