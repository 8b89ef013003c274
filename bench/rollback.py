"""rollback: a one-shot CLI rollback and unpin (no daemon), whole process, over a real sshd on 127.0.0.1.

Each sample runs `reconciler rollback D` (back to the older release) and then `reconciler unpin D`
(back to the branch head's build), each a process of its own that returns with the release live.
Baselines, same run: one `ssh DEST true` (a new OpenSSH connection), and the two-command path
the one-shot replaced: `rollback --no-wait` (probe and commit) then `reconcile --site D` (probe
again and switch), two processes and two SSH connections. The sshd counts the SSH commands
each path ran (VERBOSE "Starting session" lines). Targets: a rollback at most 2 SSH round trips
after its commit, and at most 0.5 s on loopback.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import use_bytecode, use_git_identity
from bench.fleet import sessions_started, start_fleet
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site

DOMAIN = "rollback.example.com"
_TOOK = re.compile(r": live: \S+ \(([0-9.]+) s, applied here\)")


def _cli(config: Path, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "reconciler", "--config", str(config), *args],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"reconciler {' '.join(args)}: exit {done.returncode}: {done.stdout}{done.stderr}")
    return done.stdout


def _timed(work: Callable[[], object], count: Callable[[], int]) -> tuple[float, int]:
    before = count()
    started = time.perf_counter()
    work()
    return time.perf_counter() - started, count() - before


def main(samples: int = 5) -> None:
    use_git_identity()
    use_bytecode()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fleet = start_fleet(tmp, 1, log_sessions=True)  # sshd logs each session: the commands it ran
        server = fleet.servers[0]
        try:
            app = make_app_repo(tmp / "app")
            decl = make_decl_repo(tmp / "decl")
            base = tmp / "srv"
            config = tmp / "reconciler.toml"
            config.write_text(f'repo = "{decl}"\nstate_dir = "{tmp / "state"}"\n' + fleet.config_lines())
            write_site(decl, DOMAIN, server=server.destination, base_path=str(base), repository=str(app), keep=5)
            _cli(config, "reconcile")
            app_commit(app, "v2")
            _cli(config, "reconcile")
            link = base / DOMAIN
            second = os.readlink(link).rsplit("/", 1)[-1]

            def count() -> int:
                return sessions_started(fleet)

            def live(older: bool = False) -> None:
                """Live when the command returned: the older release, or the branch head's build."""
                now = os.readlink(link).rsplit("/", 1)[-1]
                if (now != second) != older:
                    raise RuntimeError(f"{DOMAIN}: {now} is live, not what was asked")

            rows: dict[str, list[tuple[float, int]]] = {k: [] for k in (
                "rollback", "rollback in-command", "unpin", "unpin in-command", "old rollback", "old unpin",
                "imports", "libraries", "ssh")}
            # A rollback's imports and nothing else: it leaves as the command line does (cli/entry.py).
            imports = [sys.executable, "-c",
                       "import os, reconciler.cli.acting, reconciler.remote.transport.ssh; os._exit(0)"]
            # The floor under any one-shot command of ours: Python and the libraries a rollback
            # cannot do without (SSH, the declarations' models, git, the state database, TOML edits).
            libraries = [sys.executable, "-c", "import os, asyncio, asyncssh, pydantic, pygit2, sqlite_utils, tomlkit;"
                         "os._exit(0)"]

            def one_step(name: str, older: bool) -> None:
                said: list[str] = []
                rows[name].append(_timed(lambda: said.append(_cli(config, name, DOMAIN)), count))
                live(older)
                took = _TOOK.search(said[0])
                rows[f"{name} in-command"].append((float(took.group(1)) if took else float("nan"), 0))

            for _ in range(samples):
                one_step("rollback", older=True)
                one_step("unpin", older=False)
                rows["imports"].append(_timed(lambda: subprocess.run(imports, check=True), count))
                rows["libraries"].append(_timed(lambda: subprocess.run(libraries, check=True), count))
                rows["old rollback"].append(_timed(lambda: (_cli(config, "rollback", DOMAIN, "--no-wait"),
                                                            _cli(config, "reconcile", "--site", DOMAIN)), count))
                live(older=True)
                rows["old unpin"].append(_timed(lambda: (_cli(config, "unpin", DOMAIN, "--no-wait"),
                                                         _cli(config, "reconcile", "--site", DOMAIN)), count))
                live()
                rows["ssh"].append(_timed(lambda: subprocess.run(
                    ["ssh", "-F", str(server.ssh_config), "testserver", "true"], check=True), count))
        finally:
            server.stop()
    _report(rows, samples)


def _report(rows: dict[str, list[tuple[float, int]]], samples: int) -> None:
    def median(name: str) -> float:
        return statistics.median(t for t, _ in rows[name])

    def commands(name: str) -> int:
        return round(statistics.median(n for _, n in rows[name]))

    labels = {"rollback": "reconciler rollback D (one step, to live)",
              "rollback in-command": "  of which the command itself (it says)",
              "unpin": "reconciler unpin D (one step)",
              "unpin in-command": "  of which the command itself (it says)",
              "imports": "baseline: python start + a rollback's imports",
              "libraries": "  of which python + the libraries alone",
              "old rollback": "baseline: rollback --no-wait + reconcile", "old unpin": "baseline: unpin --no-wait + "
              "reconcile", "ssh": "baseline: ssh DEST true (new connection)"}
    print(f"rollback: one-shot CLI rollback and unpin, whole process, no daemon, real sshd on 127.0.0.1 "
          f"(n = {samples})")
    print(f"{'measure':<46}{'median':>10}{'ssh cmds':>10}")
    for name, label in labels.items():
        print(f"{label:<46}{median(name) * 1000:>8.0f}ms{commands(name):>10}")
    ssh = median("ssh")
    print(f"ratios: rollback / ssh true {median('rollback') / ssh:.1f}; rollback / two-command path "
          f"{median('rollback') / median('old rollback'):.2f}; unpin / two-command path "
          f"{median('unpin') / median('old unpin'):.2f}")
    # A rollback's first command is the check before the commit (one probe); the rest follow it.
    after = commands("rollback") - 1
    print(f"target: a rollback at most 2 SSH round trips after its commit: {after} "
          f"({'met' if after <= 2 else 'MISSED'}); at most 500 ms on loopback: {median('rollback') * 1000:.0f} ms "
          f"({'met' if median('rollback') <= 0.5 else 'MISSED'}; the whole process, Python start included); "
          f"the command itself, after its imports: {median('rollback in-command') * 1000:.0f} ms "
          f"({'met' if median('rollback in-command') <= 0.5 else 'MISSED'}); above python and its libraries "
          f"alone: {(median('rollback') - median('libraries')) * 1000:.0f} ms")
