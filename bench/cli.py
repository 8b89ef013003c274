"""cli: how fast the operator's commands answer (issue 15 item 6), each as a whole process on a
demo-like state: one local-transport site deployed twice (two history rows, a local log), and
one site on a real sshd on 127.0.0.1 for `diff` over SSH, beside `ssh DEST true` (OpenSSH's own
connect + login + one command: the floor of any probe over SSH).

Baseline: `python -c pass` (the interpreter's own start-up), measured in the same run,
interleaved with the commands so machine load hits all rows alike. Target: under 200 ms wall.
`status, nothing remembered yet` is the first status after a declarations commit or a config change:
nothing remembered yet (engine.memo), so it validates with pydantic and reads with pygit2 once.
Then the top import costs of `status` and `diff`, from `python -X importtime`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import use_bytecode, use_git_identity
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site
from tests.support.sshd import SshServer, start_sshd

RUNS = int(os.environ.get("BENCH_CLI_RUNS", "15"))
TARGET_MS = 200.0
DOMAIN = "demo.example.com"
REMOTE = "ssh.example.com"
ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _time(argv: list[str], env: dict[str, str], before: Path | None = None) -> float:
    if before is not None:
        shutil.rmtree(before, ignore_errors=True)  # forget what the CLI remembered
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr}")
    return elapsed


def _top_imports(argv: list[str], env: dict[str, str], count: int = 6) -> list[tuple[str, float]]:
    """The top-level imports of one run with their cumulative cost (ms), costliest first."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    costs = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit() and name.startswith(" ") and not name.startswith("  "):
            costs.append((name.strip(), int(cumulative) / 1000))
    return sorted(costs, key=lambda item: -item[1])[:count]


def main() -> None:
    use_git_identity()
    use_bytecode()
    env = _env()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        try:
            _measure(tmp, server, env)
        finally:
            server.stop()


def _measure(tmp: Path, server: SshServer, env: dict[str, str]) -> None:
    app = make_app_repo(tmp / "app")
    decl = make_decl_repo(tmp / "decl")
    write_site(decl, DOMAIN, server="local", base_path=str(tmp / "srv"), repository=str(app),
               script='echo "composer install (simulated)"\n', keep=3)
    write_site(decl, REMOTE, server=server.destination, base_path=str(tmp / "remote"), repository=str(app), keep=3)
    config = tmp / "reconciler.toml"
    config.write_text(f'repo = "{decl}"\nstate_dir = "{tmp / "state"}"\nallow_local = true\n'
                      f'identity_file = "{server.identity_file}"\nknown_hosts = "{server.known_hosts}"\n')
    cli = [sys.executable, "-m", "reconciler", "--config", str(config)]
    for n in range(2):  # two deployments: history has rows, logs has a latest
        if n:
            app_commit(app, "v2")
        subprocess.run([*cli, "reconcile"], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    memo = tmp / "state" / "cli-memo"
    rows: list[tuple[str, list[str], Path | None]] = [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"], None),
        ("reconciler --help", [*cli, "--help"], None),
        ("reconciler status", [*cli, "status"], None),
        ("reconciler status --json", [*cli, "status", "--json"], None),
        (f"reconciler status {DOMAIN}", [*cli, "status", DOMAIN], None),
        (f"reconciler history {DOMAIN}", [*cli, "history", DOMAIN], None),
        (f"reconciler logs {DOMAIN}", [*cli, "logs", DOMAIN], None),
        (f"reconciler diff --site {DOMAIN}", [*cli, "diff", "--site", DOMAIN], None),
        (f"reconciler diff --site {REMOTE} (sshd)", [*cli, "diff", "--site", REMOTE], None),
        ("ssh DEST true (OpenSSH floor of an SSH probe)", ["ssh", "-F", str(server.ssh_config), "testserver",
                                                         "true"], None),
        ("reconciler status, nothing remembered yet", [*cli, "status"], memo),
    ]
    for _, argv, _ in rows:  # warm the page cache and the memo once
        _time(argv, env)
    times: dict[str, list[float]] = {name: [] for name, _, _ in rows}
    for _ in range(RUNS):
        for name, argv, before in rows:
            times[name].append(_time(argv, env, before))
    _time([*cli, "status"], env)  # leave the memo warm for the import profile below
    base = statistics.median(times[rows[0][0]]) * 1000
    print(f"cli: whole-process wall time, demo-like state (a local site deployed twice, a site on sshd), "
          f"median of {RUNS} interleaved runs")
    print(f"{'command':<52}{'median':>10}{'ratio':>8}   < {TARGET_MS:.0f} ms")
    for name, _, _ in rows:
        ms = statistics.median(times[name]) * 1000
        met = "-" if name.startswith(("python", "ssh")) else ("yes" if ms < TARGET_MS else "NO")
        print(f"{name:<52}{ms:>7.0f} ms{ms / base:>7.1f}x   {met}")
    for what, argv in (("status", [*cli[1:], "status"]), ("diff", [*cli[1:], "diff", "--site", DOMAIN])):
        top = ", ".join(f"{name} {ms:.0f} ms" for name, ms in _top_imports(argv, env))
        print(f"top imports of {what} (cumulative): {top}")


if __name__ == "__main__":
    main()
