"""memory: peak RSS (VmHWM) of the daemon, `python -m reconciler --config CFG run`, with 500 sites.

The sites are local (server "local"). To keep the run short, most of them get a converged layout
hardlinked from one real template deploy (see bench/noop.py) and `fresh` of them have nothing yet,
so the daemon's first pass really deploys those and adopts the others into a fresh database. When
every site is Synced the daemon gets SIGHUP (a reload: one more full pass, a no-op), and when that
pass is over its VmHWM is read from /proc. The same is done with a single site, so the cost per
site can be told apart from the fixed cost. Baseline: the peak RSS of a bare
`python -c "import reconciler.cli.main"` process, measured in the same run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import GIT_IDENTITY
from bench.noop import TEMPLATE, _one_pass, build_layout, domain, write_sites
from reconciler.config import Settings
from tests.support import make_app_repo, make_decl_repo, write_site

SCRIPT = "true\n"


def _mb(kib: float) -> float:
    """/proc reports kB meaning KiB; targets are in MB (10^6 bytes)."""
    return kib * 1024 / 1e6


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def import_peak(module: str) -> int:
    """VmHWM (KiB) of a fresh interpreter that only imports `module`."""
    code = (f"import {module}\nfor line in open('/proc/self/status'):\n"
            "    line.startswith('VmHWM:') and print(line.split()[1])")
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def _synced(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return int(conn.execute("select count(*) from sites where sync = 'Synced'").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def _children(pid: int) -> list[str]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return path.read_text().split() if path.exists() else []


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15])  # utime stime cutime cstime


def _wait_for_pass(pid: int, log: Path, timeout: float) -> None:
    """After SIGHUP: wait for the reload to be logged, then until the daemon has no child and has
    used no CPU for half a second (a no-op pass writes nothing that could be watched instead)."""
    deadline = time.monotonic() + timeout
    while "configuration reloaded" not in log.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.05)
    ticks = _cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _cpu_ticks(pid)
        if now == ticks and not _children(pid):
            return
        ticks = now


def run_daemon(config: Path, db: Path, sites: int, timeout: float) -> dict[str, float]:
    started = time.perf_counter()
    log = config.with_suffix(".log")
    with open(log, "wb") as err:
        daemon = subprocess.Popen([sys.executable, "-m", "reconciler", "--config", str(config), "run"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + timeout
        while _synced(db) < sites and time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.2)
        converged = time.perf_counter() - started
        synced = _synced(db)
        if daemon.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-5:]
            raise RuntimeError(f"the daemon exited with {daemon.returncode}: {' | '.join(tail)}")
        after_converge = _status_kib(daemon.pid, "VmHWM")
        daemon.send_signal(signal.SIGHUP)
        _wait_for_pass(daemon.pid, log, 60)
        peak = _status_kib(daemon.pid, "VmHWM")
        rss = _status_kib(daemon.pid, "VmRSS")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    if synced < sites:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        print(f"PROBLEM: only {synced}/{sites} sites Synced after {timeout:.0f} s; daemon log: {' | '.join(tail)}")
    return {"converged": converged, "synced": synced, "after_converge": after_converge, "peak": peak, "rss": rss}


def main(sites: int = 500, fresh: int = 50, timeout: float = 300.0) -> None:
    total = time.perf_counter()
    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        app = make_app_repo(tmp / "app")
        site: dict[str, Any] = {"server": "local", "repository": str(app), "script": SCRIPT, "keep": 1}
        decl = make_decl_repo(tmp / "decl-template")
        write_site(decl, TEMPLATE, base_path=str(tmp / "template"), **site)
        outcome = asyncio.run(_one_pass(Settings(repo=decl, state_dir=tmp / "state-template", allow_local=True)))[0]
        if outcome.sync != "Synced":
            raise RuntimeError(f"template deploy failed: {outcome}")
        build_layout(tmp / "template", tmp / "srv", [domain(n) for n in range(min(fresh, sites), sites)])
        results = {}
        for count in (1, sites):
            decl = make_decl_repo(tmp / f"decl-{count}")
            base = tmp / ("srv" if count == sites else "srv-one")
            write_sites(decl, [(domain(n), {**site, "base_path": str(base)}) for n in range(count)])
            state = tmp / f"state-{count}"
            config = tmp / f"reconciler-{count}.toml"
            config.write_text(f'repo = "{decl}"\nstate_dir = "{state}"\ninterval = 3600\nallow_local = true\n')
            results[count] = run_daemon(config, state / "reconciler.db", count, timeout)
        live = sum(1 for n in range(sites) if (tmp / "srv" / domain(n) / "public").is_dir())
    bare = import_peak("reconciler.cli.main")
    daemon_imports = import_peak("reconciler.service.daemon")
    big, one = results[sites], results[1]
    print(f"memory: daemon peak RSS (VmHWM) with {sites} local sites ({min(fresh, sites)} deployed by the "
          f"daemon, {sites - min(fresh, sites)} adopted from prebuilt layouts), after convergence and one more "
          "full no-op pass (SIGHUP)")
    print(f"{'process':<52}{'VmHWM':>10}{'x baseline':>12}")
    rows = [("baseline: python -c 'import reconciler.cli.main'", bare),
            ("python -c 'import reconciler.service.daemon'", daemon_imports),
            ("daemon, 1 site", one["peak"]),
            (f"daemon, {sites} sites", big["peak"])]
    for name, kib in rows:
        print(f"{name:<52}{_mb(kib):>8.1f}MB{kib / bare:>12.2f}")
    print(f"daemon with {sites} sites: VmHWM {_mb(big['after_converge']):.1f} MB after converging "
          f"({big['synced']}/{sites} Synced in {big['converged']:.0f} s), VmRSS at the end {_mb(big['rss']):.1f} MB; "
          f"{live} site links serve public/")
    per_site = (big["peak"] - one["peak"]) / max(sites - 1, 1)
    print(f"cost per declared site: {per_site:.1f} KiB (peak with {sites} sites - peak with 1, per site)")
    verdict = "met" if _mb(big["peak"]) < 100 else "MISSED"
    print(f"target: under 100 MB with {sites} sites: {_mb(big['peak']):.1f} MB, {verdict}")
    print(f"memory bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
