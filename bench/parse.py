"""parse: what a declarations commit that changes one file (a rollback pin) costs to load at
5,000 sites, with the last commit's parse results reused by blob (`engine.source.BlobCache`)
against the baseline measured in the same run: the same load parsing every file again (what
every commit cost before). The daemon pays this between a pin's commit and its switch."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import use_git_identity
from reconciler.engine import source

SITES = 5_000
SITE = ('server = "web-{n}"\nrepository = "git@github.com:acme/s{i}.git"\nscript = """\ncomposer install\n'
        'php artisan migrate --force\n"""\nphp = "8.3"\n')


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def main(samples: int = 5) -> None:
    use_git_identity()
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        repo = Path(tmp) / "decl"
        (repo / "sites.d").mkdir(parents=True)
        _git(repo, "init", "-q", "-b", "main")
        for i in range(SITES):
            (repo / "sites.d" / f"s{i}.example.com.toml").write_text(SITE.format(n=i % 50, i=i))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"{SITES} sites")
        commits = [_git(repo, "rev-parse", "HEAD")]
        for k in range(samples):
            with (repo / "sites.d" / f"s{k}.example.com.toml").open("a") as file:
                file.write('pin = "01012026-000000"\n')
            _git(repo, "commit", "-qam", f"pin s{k}")
            commits.append(_git(repo, "rev-parse", "HEAD"))
        full, cached = [], []
        cache = source.BlobCache()
        source.load_commit(repo, commits[0], cache)
        for commit in commits[1:]:
            start = time.perf_counter()
            source.load_commit(repo, commit)
            full.append(time.perf_counter() - start)
            start = time.perf_counter()
            source.load_commit(repo, commit, cache)
            cached.append(time.perf_counter() - start)
    base, now = statistics.median(full), statistics.median(cached)
    print(f"parse: a one-file commit at {SITES} sites (median of {samples})")
    print(f"  every file parsed (baseline)   {base * 1000:8.1f} ms")
    print(f"  changed blobs only (BlobCache) {now * 1000:8.1f} ms   x{base / now:.1f} faster")
