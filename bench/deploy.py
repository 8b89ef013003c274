"""deploy: re-deploy and first deploy of an app with a large history, cloned over a real sshd.

The app repository has `history_mb` commits of 1 MiB of incompressible random data each, spread
over `files` paths (so the history is large and the checkout small, like a long-lived app). It
is generated once with `git fast-import` and cached under the temp dir, keyed by its parameters;
each run works on a hardlinked copy. The site's server is "local", so the deploy commands run
on this machine, but the repository is `ssh://USER@127.0.0.1:PORT/...` through a test sshd, so
every clone, fetch and ls-remote really transfers over SSH (GIT_SSH_COMMAND carries the key).

(a) re-deploy: a new small app commit, then one reconcile pass that deploys it (probe with
    ls-remote, lock, incremental fetch into the .repo mirror, local clone, script, switch, prune);
(b) baseline, the seed's way: a fresh `git clone` of the repository for the release (the clone
    alone: no probe, no script, no switch, so the baseline is flattering to the seed);
(c) first deploy (no mirror yet) vs a bare `git clone` of the same repository.
Each SSH connection on this machine also pays the login shell's rc files (root's ~/.bashrc).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.config import Settings
from reconciler.converge import Reconciler, SiteOutcome
from reconciler.layout import sort_releases
from reconciler.store import Store
from tests.builders import make_decl_repo, write_site
from tests.sshd import SshServer, start_sshd

DOMAIN = "deploy.example.com"
MIB = 1 << 20
SCRIPT = 'echo "composer install (simulated)"\n'
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
                "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}


def _git(*args: str, cwd: Path | None = None, stdin: bytes | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True)
    return done.stdout.decode().strip()


def _commit_header(message: str, when: int, parent: str | None) -> bytes:
    text = message.encode()
    head = b"commit refs/heads/main\ncommitter bench <bench@localhost> %d +0000\ndata %d\n%s\n" % (
        when, len(text), text)
    return head + (f"from {parent}\n".encode() if parent else b"")


def _inline(path: str, data: bytes) -> bytes:
    return b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data)


def app_repository(history_mb: int, files: int) -> Path:
    """A bare app repository with `history_mb` MiB of history; cached under the temp dir."""
    cache = Path(tempfile.gettempdir()) / f"reconciler-bench-deploy-v1-{history_mb}mib-{files}files"
    repo = cache / "app.git"
    if (cache / "complete").exists():
        return repo
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    started = time.perf_counter()
    _git("init", "-q", "--bare", "-b", "main", str(repo))
    # Stored without zlib (random data does not compress; compressing it is most of the cost) and
    # without delta attempts against the previous version of each path (big-file-threshold).
    importer = subprocess.Popen(
        ["git", "-c", "pack.compression=0", "-c", "core.compression=0", "fast-import", "--quiet",
         "--big-file-threshold=64k"], cwd=repo, stdin=subprocess.PIPE)
    assert importer.stdin is not None
    for n in range(history_mb):
        chunk = _commit_header(f"assets {n}", 1_700_000_000 + n * 60, None)
        if n == 0:  # Laravel-like: ships public/index.php and a storage/ skeleton
            chunk += _inline("public/index.php", b"<?php echo 'v0';\n") + _inline("storage/logs/.gitkeep", b"")
        importer.stdin.write(chunk + _inline(f"assets/chunk-{n % files}.bin", os.urandom(MIB)))
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    (cache / "complete").write_text(f"generated in {time.perf_counter() - started:.1f}s\n")
    return repo


def small_commit(repo: Path, n: int) -> str:
    """A small app change on top of main (a new public/index.php)."""
    parent = _git("rev-parse", "refs/heads/main", cwd=repo)
    stream = _commit_header(f"v{n}", int(time.time()), parent) + _inline("public/index.php",
                                                                          f"<?php echo 'v{n}';\n".encode())
    _git("fast-import", "--quiet", cwd=repo, stdin=stream)
    return _git("rev-parse", "refs/heads/main", cwd=repo)


def _pass(settings: Settings) -> tuple[float, SiteOutcome]:
    """One real reconcile pass, as the CLI runs it (fresh store connection and transports)."""

    async def go() -> tuple[float, SiteOutcome]:
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            started = time.perf_counter()
            outcomes = await reconciler.run_pass()
            return time.perf_counter() - started, outcomes[0]
        finally:
            await reconciler.close()
            reconciler.store.close()

    return asyncio.run(go())


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _git_ssh_command(server: SshServer) -> str:
    return (f"ssh -i {server.identity_file} -o IdentitiesOnly=yes -o UserKnownHostsFile={server.known_hosts} "
            "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes")


def _live(base: Path) -> tuple[str, str]:
    """(HEAD commit, origin URL) of the release the site link points at."""
    release = base / DOMAIN
    return (_git("rev-parse", "HEAD", cwd=release), _git("config", "--get", "remote.origin.url", cwd=release))


def _seconds(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s"


def main(history_mb: int = 64, redeploys: int = 7, first_deploys: int = 5, files: int = 8) -> None:
    total = time.perf_counter()
    cached = (Path(tempfile.gettempdir()) / f"reconciler-bench-deploy-v1-{history_mb}mib-{files}files"
              / "complete").exists()
    started = time.perf_counter()
    source = app_repository(history_mb, files)
    generation = time.perf_counter() - started
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name, _environment(GIT_IDENTITY):
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        try:
            app = tmp / "app.git"
            _git("clone", "-q", "--bare", "--local", str(source), str(app))  # hardlinks: instant
            pack_bytes = sum(p.stat().st_size for p in (app / "objects" / "pack").glob("*.pack"))
            url = f"ssh://{server.user}@{server.host}:{server.port}{app}"
            rtts = [_timed(["ssh", "-F", str(server.ssh_config), "testserver", "true"]) for _ in range(5)]
            with _environment({"GIT_SSH_COMMAND": _git_ssh_command(server)}):
                site = {"server": "local", "repository": url, "script": SCRIPT, "keep": 3}
                # (c) first deploy (no mirror) vs a bare git clone, interleaved so load hits both alike.
                firsts, first_clones = [], []
                for n in range(first_deploys):
                    decl = make_decl_repo(tmp / f"decl-first{n}")
                    write_site(decl, DOMAIN, base_path=str(tmp / f"first{n}"), **site)
                    if n % 2:  # alternate the order: what runs after a big write pays for its writeback
                        first_clones.append(_timed(["git", "clone", "-q", url, str(tmp / f"first-clone{n}")]))
                    os.sync()
                    elapsed, outcome = _pass(Settings(repo=decl, state_dir=tmp / f"state-first{n}"))
                    firsts.append(elapsed)
                    if outcome.sync != "Synced" or not any(a.startswith("deploy") for a in outcome.actions):
                        problems.append(f"first deploy {n}: {outcome.sync} {outcome.message} {outcome.actions}")
                    if not n % 2:
                        first_clones.append(_timed(["git", "clone", "-q", url, str(tmp / f"first-clone{n}")]))
                    shutil.rmtree(tmp / f"first-clone{n}")
                # (a) re-deploys of a small new commit on the site built by the last first deploy,
                # vs (b) a fresh clone per release. One warm-up re-deploy is not counted.
                decl_settings = Settings(repo=tmp / f"decl-first{first_deploys - 1}",
                                         state_dir=tmp / f"state-first{first_deploys - 1}")
                base = tmp / f"first{first_deploys - 1}"
                redeploy_times, clones = [], []
                for n in range(redeploys + 1):
                    commit = small_commit(app, n + 1)
                    os.sync()
                    elapsed, outcome = _pass(decl_settings)
                    head, origin = _live(base)
                    if outcome.sync != "Synced" or head != commit or origin != url:
                        problems.append(f"re-deploy {n}: {outcome.sync} {outcome.message}; live {head[:12]} "
                                        f"(want {commit[:12]}), origin {origin}")
                    if n == 0:
                        continue
                    redeploy_times.append(elapsed)
                    os.sync()
                    clones.append(_timed(["git", "clone", "-q", url, str(tmp / f"clone{n}")]))
                    shutil.rmtree(tmp / f"clone{n}")
                releases = sort_releases(p.name for p in (base / "deployments" / DOMAIN).iterdir())
        finally:
            server.stop()
    re_med, clone_med = statistics.median(redeploy_times), statistics.median(clones)
    first_med, first_clone_med = statistics.median(firsts), statistics.median(first_clones)
    speedup = clone_med / re_med
    overhead = first_med / first_clone_med - 1
    print(f"deploy: app with {history_mb} MiB of history ({pack_bytes / MIB:.0f} MiB pack, {history_mb} commits, "
          f"{files} MiB checkout), cloned over sshd on 127.0.0.1; site server \"local\"")
    print(f"repository {'cached' if cached else 'generated'} in {generation:.1f} s; "
          f"medians of {redeploys} re-deploys and {first_deploys} first deploys")
    print(f"{'measure':<54}{'median':>10}")
    print(f"{'baseline: ssh true (new connection, incl. ~/.bashrc)':<54}{_seconds(rtts):>10}")
    print(f"{'(a) reconciler re-deploy: new commit, one pass':<54}{_seconds(redeploy_times):>10}")
    print(f"{'(b) baseline: fresh git clone per release (seed)':<54}{_seconds(clones):>10}")
    print(f"{'(c) reconciler first deploy (no mirror), one pass':<54}{_seconds(firsts):>10}")
    print(f"{'(c) baseline: bare git clone of the repository':<54}{_seconds(first_clones):>10}")
    verdict = "met" if speedup >= 5 else "MISSED"
    print(f"re-deploy speed-up (b)/(a): {speedup:.1f}x   target >= 5x: {verdict}")
    verdict = "met" if overhead <= 0.20 else "MISSED"
    print(f"first-deploy overhead (c)/clone - 1: {overhead * 100:+.0f}%   target <= +20%: {verdict}")
    print(f"first-deploy overhead in absolute terms: {first_med - first_clone_med:+.2f} s "
          f"(= {(first_med - first_clone_med) / statistics.median(rtts):.1f} ssh connections; the probe's "
          "ls-remote is one)")
    print(f"re-deploy in ssh connections: {re_med / statistics.median(rtts):.1f}; "
          f"releases left on the server (keep 3): {', '.join(releases)}")
    # Extrapolation, not a measurement: a fresh clone costs one connection plus the transfer, a
    # re-deploy about the same whatever the history; where would the two reach 5x?
    rtt = statistics.median(rtts)
    per_mib = max(clone_med - rtt, 1e-3) / (pack_bytes / MIB)
    print(f"clone transfer here: {1 / per_mib:.0f} MiB/s; 5x would need about "
          f"{max(5 * re_med - rtt, 0) / per_mib:.0f} MiB of history at this re-deploy time (extrapolated)")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
          " (other work on the machine inflates wall times)")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print(f"deploy bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main(*(int(arg) for arg in sys.argv[1:]))
