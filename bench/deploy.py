"""deploy: re-deploy and first deploy of an app with a large history, cloned over a real sshd.

For each size (default 64 and 256 MiB) the app repository has one commit of 1 MiB of incompressible
random data per MiB, spread over `files` paths (so the history is large and the checkout small, like
a long-lived app). It is generated once with `git fast-import` and cached under the temp dir, keyed
by its parameters; each run works on a hardlinked copy. The site's server is "local", so the deploy commands run
on this machine, but the repository is `ssh://USER@127.0.0.1:PORT/...` through a test sshd, so
every clone, fetch and ls-remote really transfers over SSH (GIT_SSH_COMMAND carries the key).

(a) re-deploy: a new small app commit, then one reconcile pass that deploys it (probe with
    ls-remote, lock, incremental fetch into the .repo mirror, local clone, script, switch, prune);
(b) baseline, the seed's way: a fresh `git clone` of the repository for the release (the clone
    alone: no probe, no script, no switch, so the baseline is flattering to the seed);
(c) first deploy (no mirror yet) vs a bare `git clone` of the same repository.
SSH sessions get the test sshd's own home (tests/support/sshd.py), so no rc file of this machine runs.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import GIT_IDENTITY
from reconciler.config import Settings
from reconciler.core.layout import sort_releases
from reconciler.engine.converge import Reconciler, SiteOutcome
from reconciler.engine.store import Store
from tests.support import make_decl_repo, write_site
from tests.support.sshd import SshServer, start_sshd

DOMAIN = "deploy.example.com"
MIB = 1 << 20
SCRIPT = 'echo "composer install (simulated)"\n'


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


def _cache_dir(history_mb: int, files: int) -> Path:
    return Path(tempfile.gettempdir()) / f"reconciler-bench-deploy-v1-{history_mb}mib-{files}files"


def app_repository(history_mb: int, files: int) -> Path:
    """A bare app repository with `history_mb` MiB of history; cached under the temp dir."""
    cache = _cache_dir(history_mb, files)
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


def _median(values: list[float]) -> float:
    return statistics.median(values)


@dataclass
class SizeResult:
    mib: int
    pack: float  # MiB
    cached: bool
    generation: float
    redeploy: float  # medians, seconds
    clone: float
    first: float
    first_clone: float
    problems: list[str] = field(default_factory=list)


def measure(server: SshServer, tmp: Path, history_mb: int, files: int, redeploys: int,
            first_deploys: int) -> SizeResult:
    """(a), (b) and (c) for one repository size; every run in `tmp`, served by `server`."""
    cached = (_cache_dir(history_mb, files) / "complete").exists()
    started = time.perf_counter()
    source = app_repository(history_mb, files)
    generation = time.perf_counter() - started
    problems: list[str] = []
    app = tmp / "app.git"
    _git("clone", "-q", "--bare", "--local", str(source), str(app))  # hardlinks: instant
    pack_bytes = sum(p.stat().st_size for p in (app / "objects" / "pack").glob("*.pack"))
    url = f"ssh://{server.user}@{server.host}:{server.port}{app}"
    site: dict[str, Any] = {"server": "local", "repository": url, "script": SCRIPT, "keep": 3}
    # (c) first deploy (no mirror) vs a bare git clone, interleaved so load hits both alike.
    firsts, first_clones = [], []
    for n in range(first_deploys):
        decl = make_decl_repo(tmp / f"decl-first{n}")
        write_site(decl, DOMAIN, base_path=str(tmp / f"first{n}"), **site)
        if n % 2:  # alternate the order: what runs after a big write pays for its writeback
            first_clones.append(_timed(["git", "clone", "-q", url, str(tmp / f"first-clone{n}")]))
        os.sync()
        elapsed, outcome = _pass(Settings(repo=decl, state_dir=tmp / f"state-first{n}", allow_local=True))
        firsts.append(elapsed)
        if outcome.sync != "Synced" or not any(a.startswith("deploy") for a in outcome.actions):
            problems.append(f"first deploy {n}: {outcome.sync} {outcome.message} {outcome.actions}")
        if not n % 2:
            first_clones.append(_timed(["git", "clone", "-q", url, str(tmp / f"first-clone{n}")]))
        shutil.rmtree(tmp / f"first-clone{n}")
        if n < first_deploys - 1:
            shutil.rmtree(tmp / f"first{n}")
    # (a) re-deploys of a small new commit on the site built by the last first deploy,
    # vs (b) a fresh clone per release. One warm-up re-deploy is not counted.
    settings = Settings(repo=tmp / f"decl-first{first_deploys - 1}", state_dir=tmp / f"state-first{first_deploys - 1}",
                        allow_local=True)
    base = tmp / f"first{first_deploys - 1}"
    redeploy_times, clones = [], []
    for n in range(redeploys + 1):
        commit = small_commit(app, n + 1)
        os.sync()
        elapsed, outcome = _pass(settings)
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
    if len(releases) != 3:
        problems.append(f"keep = 3 but {len(releases)} releases are left: {releases}")
    return SizeResult(history_mb, pack_bytes / MIB, cached, generation, _median(redeploy_times), _median(clones),
                      _median(firsts), _median(first_clones), problems)


def main(sizes: tuple[int, ...] = (64, 256), redeploys: int = 5, first_deploys: int = 3, files: int = 8) -> None:
    total = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp_name, _environment(GIT_IDENTITY):
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        try:
            rtt = _median([_timed(["ssh", "-F", str(server.ssh_config), "testserver", "true"]) for _ in range(5)])
            with _environment({"GIT_SSH_COMMAND": _git_ssh_command(server)}):
                for history_mb in sizes:
                    (tmp / f"{history_mb}").mkdir()
                    results.append(measure(server, tmp / f"{history_mb}", history_mb, files, redeploys,
                                           first_deploys))
                    shutil.rmtree(tmp / f"{history_mb}")
        finally:
            server.stop()
    print(f"deploy: apps with large histories (1 MiB of random data per commit, {files} MiB checkout) cloned over "
          f"sshd on 127.0.0.1; site server \"local\"; medians of {redeploys} re-deploys, {first_deploys} first deploys")
    width = 52
    print(f"{'measure':<{width}}" + "".join(f"{str(r.mib) + ' MiB':>12}" for r in results))

    def row(name: str, cells: list[str]) -> None:
        print(f"{name:<{width}}" + "".join(f"{cell:>12}" for cell in cells))

    row("pack size", [f"{r.pack:.0f} MiB" for r in results])
    row("baseline: ssh true (new connection, incl. rc files)", [f"{rtt:.2f} s" for _ in results])
    row("(a) reconciler re-deploy: new commit, one pass", [f"{r.redeploy:.2f} s" for r in results])
    row("(b) baseline: fresh git clone per release (seed)", [f"{r.clone:.2f} s" for r in results])
    row("    speed-up (b)/(a), target >= 5x", [f"{r.clone / r.redeploy:.1f}x" for r in results])
    row("(c) reconciler first deploy (no mirror), one pass", [f"{r.first:.2f} s" for r in results])
    row("(c) baseline: bare git clone of the repository", [f"{r.first_clone:.2f} s" for r in results])
    row("    overhead (c)/clone - 1, target <= +20%",
        [f"{(r.first / r.first_clone - 1) * 100:+.0f}%" for r in results])
    row("    overhead in ssh connections", [f"{(r.first - r.first_clone) / rtt:.1f}" for r in results])
    row("re-deploy in ssh connections", [f"{r.redeploy / rtt:.1f}" for r in results])
    for r in results:
        speedup = r.clone / r.redeploy
        overhead = r.first / r.first_clone - 1
        # Extrapolation, not a measurement: a fresh clone costs a connection plus the transfer; a
        # re-deploy costs about the same whatever the history.
        per_mib = max(r.clone - rtt, 1e-3) / r.pack
        print(f"{r.mib} MiB: re-deploy {speedup:.1f}x faster ({'met' if speedup >= 5 else 'MISSED'}); first deploy "
              f"{overhead * 100:+.0f}% ({'met' if overhead <= 0.2 else 'MISSED'}); clone transfer {1 / per_mib:.0f} "
              f"MiB/s, so 5x needs ~{max(5 * r.redeploy - rtt, 0) / per_mib:.0f} MiB of history "
              f"(extrapolated); repository {'cached' if r.cached else 'generated'} in {r.generation:.1f} s")
        for problem in r.problems:
            print(f"PROBLEM: {problem}")
    print(f"load average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs"
          " (other work on the machine inflates wall times)")
    print(f"deploy bench total: {time.perf_counter() - total:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main(tuple(int(arg) for arg in sys.argv[1:]) or (64, 256))
