"""memory: RSS of the daemon, `python -m reconciler --config CFG run`, with 5,000 sites on 50 real
sshd servers (each its own process on 127.0.0.1).

Setup (bench/fleet.py): one template site really deployed over SSH; its converged layout
hardlinked to every site (100 per server); every site declared in one commit. The daemon starts
while the sshd listeners are frozen (SIGSTOP: connections queue in the kernel, the SSH handshake
waits), so it loads the declarations, starts its first pass and then waits on the servers: that is
"idle, declarations loaded", read from /proc (VmRSS, and the peak so far, VmHWM). The listeners
are then let go (SIGCONT) and the first pass adopts every site into a fresh database; when all are
Synced the daemon gets SIGHUP `passes` times (a reload: one more full pass each, a no-op), and
after each the RSS is read again. The same is done with one site, so the cost per site can be
told apart from the fixed cost. Baseline: a bare `python -c "import reconciler.service.daemon"`
process, measured in the same run. Target (issue 15): under 150 MB with 5,000 sites.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import use_git_identity
from bench.fleet import Fleet, Layout, deploy_template, domain, running_fleet, server_disk, write_sites
from bench.watch_daemon import stop, synced, wait_quiet
from tests.support import make_app_repo, make_decl_repo

SCRIPT = "true\n"
TARGET_MB = 150.0
CONNECT_TIMEOUT = 120  # the daemon's connect_timeout: frozen servers must not time it out


def _mb(kib: float) -> float:
    """/proc reports kB meaning KiB; targets are in MB (10^6 bytes)."""
    return kib * 1024 / 1e6


def _status_kib(pid: int | str, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def import_memory(module: str) -> tuple[int, int]:
    """(VmRSS, VmHWM) in KiB of a fresh interpreter that only imports `module`."""
    code = (f"import {module}\nfor line in open('/proc/self/status'):\n"
            "    line.startswith(('VmRSS:', 'VmHWM:')) and print(line.split()[1])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])










def _signal_listeners(fleet: Fleet, sig: signal.Signals) -> None:
    """SIGSTOP freezes the sshd listeners (a connection then queues in the kernel and its SSH
    handshake waits); SIGCONT lets them go."""
    for server in fleet.servers:
        if (pid := server.pid) is not None:
            os.kill(pid, sig)


@dataclass
class Reading:
    moment: str
    rss: int  # KiB
    hwm: int  # KiB


@dataclass
class DaemonRun:
    sites: int
    readings: list[Reading] = field(default_factory=list)
    converged: float = 0.0  # seconds from the servers' release to every site Synced
    synced: int = 0
    problems: list[str] = field(default_factory=list)

    def read(self, pid: int, moment: str) -> None:
        self.readings.append(Reading(moment, _status_kib(pid, "VmRSS"), _status_kib(pid, "VmHWM")))


def run_daemon(config: Path, db: Path, sites: int, fleet: Fleet, passes: int, timeout: float) -> DaemonRun:
    run = DaemonRun(sites)
    log = config.with_suffix(".log")
    deadline = time.monotonic() + timeout
    _signal_listeners(fleet, signal.SIGSTOP)
    try:
        with open(log, "wb") as err:
            daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "--config", str(config), "run"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            _measure(run, daemon, log, db, fleet, passes, deadline)
        finally:
            _signal_listeners(fleet, signal.SIGCONT)
            stop(daemon)
    finally:
        _signal_listeners(fleet, signal.SIGCONT)
    if run.synced < sites:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        run.problems.append(f"only {run.synced}/{sites} sites Synced after {timeout:.0f} s; daemon log: "
                            f"{' | '.join(tail)}")
    return run


def _measure(run: DaemonRun, daemon: subprocess.Popen[bytes], log: Path, db: Path, fleet: Fleet, passes: int,
             deadline: float) -> None:
    """The readings of one daemon started while the servers are frozen (see the module docstring)."""
    while "reconciler running" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        if daemon.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"the daemon exited with {daemon.returncode}: {' | '.join(tail)}")
        time.sleep(0.05)
    if not wait_quiet(daemon.pid, deadline):
        run.problems.append("the daemon never went idle before its first pass reached the servers")
    if synced(db):
        run.problems.append("sites were Synced before the servers were let go: the idle reading is not idle")
    run.read(daemon.pid, "idle, declarations loaded (first pass waiting on the servers)")
    _signal_listeners(fleet, signal.SIGCONT)
    released = time.perf_counter()
    while synced(db) < run.sites and time.monotonic() < deadline and daemon.poll() is None:
        time.sleep(0.2)
    run.converged = time.perf_counter() - released
    run.synced = synced(db)
    if daemon.poll() is not None:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"the daemon exited with {daemon.returncode}: {' | '.join(tail)}")
    wait_quiet(daemon.pid, deadline)
    run.read(daemon.pid, "after pass 1 (adopts every site: writes its rows)")
    for n in range(passes):
        daemon.send_signal(signal.SIGHUP)
        while log.read_text(errors="replace").count("configuration reloaded") <= n and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_quiet(daemon.pid, deadline)
        run.read(daemon.pid, f"after pass {n + 2} (SIGHUP: a full no-op pass)")


def main(sites: int = 5000, servers: int = 50, passes: int = 2, timeout: float = 600.0) -> None:
    total = time.perf_counter()
    use_git_identity()
    runs: dict[int, DaemonRun] = {}
    with tempfile.TemporaryDirectory() as tmp_name, server_disk(Path(tmp_name) / "disk") as (disk, disk_kind), \
            running_fleet(Path(tmp_name), servers) as fleet:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        app = make_app_repo(tmp / "app")
        site: dict[str, Any] = {"repository": str(app), "script": SCRIPT, "keep": 1}
        layout = Layout.of(deploy_template(tmp, disk, fleet, site))
        for k in range(servers):
            layout.copy_to(disk / f"srv-{k}", [domain(n) for n in range(sites) if n % servers == k])
        setup = time.perf_counter() - started
        for count in (1, sites):
            decl = make_decl_repo(tmp / f"decl-{count}")
            write_sites(decl, [(domain(n), {"server": fleet.servers[n % servers].destination,
                                            "base_path": str(disk / f"srv-{n % servers}"), **site})
                               for n in range(count)])
            state = tmp / f"state-{count}"
            config = tmp / f"reconciler-{count}.toml"
            config.write_text(f'repo = "{decl}"\nstate_dir = "{state}"\ninterval = 3600\n'
                              f"connect_timeout = {CONNECT_TIMEOUT}\n" + fleet.config_lines())
            runs[count] = run_daemon(config, state / "reconciler.db", count, fleet, passes, timeout)
        live = sum(1 for n in range(sites) if (disk / f"srv-{n % servers}" / domain(n) / "public").is_dir())
    base_rss, base_hwm = import_memory("reconciler.service.daemon")
    cli_rss, cli_hwm = import_memory("reconciler.cli.main")
    big, one = runs[sites], runs[1]
    print(f"memory: RSS of the daemon (`python -m reconciler run`) with {sites} sites on {servers} real sshd "
          f"servers (adopted from hardlinked layouts), before its first pass reaches the servers, after it, "
          f"and after {passes} more full no-op passes (SIGHUP)")
    print(f"setup: {servers} sshds in {fleet.started_in:.1f} s; template deploy and {sites} layouts in {setup:.1f} s "
          f"on {disk_kind}")
    print(f"{'process, moment':<84}{'VmRSS':>10}{'VmHWM':>10}{'x baseline':>12}")
    baseline = "baseline: python -c 'import reconciler.service.daemon'"
    print(f"{baseline:<84}{_mb(base_rss):>8.1f}MB{_mb(base_hwm):>8.1f}MB{1:>12.2f}")
    cli = "python -c 'import reconciler.cli.main'"
    print(f"{cli:<84}{_mb(cli_rss):>8.1f}MB{_mb(cli_hwm):>8.1f}MB{cli_rss / base_rss:>12.2f}")
    for run in (one, big):
        for reading in run.readings:
            name = f"daemon, {run.sites} site{'s' if run.sites > 1 else ''}: {reading.moment}"
            print(f"{name:<84}{_mb(reading.rss):>8.1f}MB{_mb(reading.hwm):>8.1f}MB{reading.rss / base_rss:>12.2f}")
    print(f"daemon with {sites} sites: {big.synced}/{sites} Synced {big.converged:.0f} s after the servers were let "
          f"go; {live} site links serve public/")
    if len(big.readings) == len(one.readings) >= 2:
        idle = (big.readings[0].rss - one.readings[0].rss) / max(sites - 1, 1)
        after = (big.readings[-1].rss - one.readings[-1].rss) / max(sites - 1, 1)
        print(f"cost per declared site (RSS with {sites} sites - with 1, per site): idle {idle:.1f} KiB, "
              f"after the passes {after:.1f} KiB")
    if len(big.readings) >= 3:
        growth = big.readings[-1].rss - big.readings[-2].rss
        print(f"RSS change over the last no-op pass: {_mb(growth):+.1f} MB (steady state: about 0)")
    peak = max(r.hwm for r in big.readings) if big.readings else 0
    end = big.readings[-1].rss if big.readings else 0
    print(f"target: daemon under {TARGET_MB:.0f} MB with {sites} sites: peak (VmHWM) {_mb(peak):.1f} MB, "
          f"{'met' if _mb(peak) < TARGET_MB else 'MISSED'}; VmRSS at the end {_mb(end):.1f} MB, "
          f"{'met' if _mb(end) < TARGET_MB else 'MISSED'}")
    for run in (one, big):
        for problem in run.problems:
            print(f"PROBLEM: daemon with {run.sites} site(s): {problem}")
    print(f"memory bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    # python -m bench.memory [SITES [SERVERS [PASSES]]]
    main(*(int(arg) for arg in sys.argv[1:4]))
