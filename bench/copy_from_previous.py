"""copy_from_previous: a re-deploy of a site with a 20,000-file vendor/, per-release (copied from
the live release) against shared (linked from shared/, the default layout), over a real sshd on
127.0.0.1.

Two sites on the same sshd, same app, same script, re-deployed alternately (a new app commit,
then one reconcile pass each): `copy` has `copy_from_previous = ["vendor"]`, `shared` keeps vendor
in `shared`. The script is composer-like: it builds vendor/ (20,000 small files in 400 packages)
only when vendor/ holds no install, then rewrites the autoloader in place, so with both layouts a
re-deploy finds vendor/ there and has little to do; the difference is the copy.

Rows: each layout's whole re-deploy (the pass: probe, lock, build, script, switch, prune: with
keep = 2, the copy layout's prune removes a release holding its own vendor/); of it, the copy step
as the release's deployment.log times it; and, for scale, vendor/ built from nothing (what the
script costs a release without a copy: `composer install` with an empty vendor/, here). The disk is
synced (untimed) before each timed step: small files are disk-bound, and no step should pay for
the writeback of the one before. Ratios: copy re-deploy / shared re-deploy, copy step / shared
re-deploy, copy step / vendor from nothing. On ext4 `cp --reflink=auto` is a real copy; on btrfs
or XFS it is a copy-on-write clone, near free.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import use_git_identity
from reconciler.config import Settings
from reconciler.core.layout import LOG_NAME
from tests.support import app_commit, make_app_repo, make_decl_repo, reconcile, settings_for, write_site
from tests.support.sshd import SshServer, start_sshd

FILES = 20_000
PACKAGES = 400
# composer install, simulated: vendor/ from nothing when not installed (FILES files), then the
# autoloader rewritten in place, as composer does on every install.
BUILD_VENDOR = (f"import os\nfor p in range({PACKAGES}):\n"
                "    d = f'vendor/pkg{p}/src'\n    os.makedirs(d, exist_ok=True)\n"
                f"    for f in range({FILES // PACKAGES}):\n"
                "        open(f'{d}/Class{f}.php', 'w').write(f'<?php class C{p}_{f} {{}}\\n')\n"
                "open('vendor/installed', 'w').close()\n")
SCRIPT = (f"[ -f vendor/installed ] || {sys.executable} .vendor-build.py\n"
          "ls vendor > vendor/autoload_classmap.php\n")
LAYOUTS = ("shared", "copy")
_TOOK = re.compile(r"==> copy_from_previous: vendor copied from the live release in ([0-9]+) ms")


def main(samples: int = 5) -> None:
    use_git_identity()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        try:
            rows = _measure(tmp, server, samples)
            # Reflinks or a real copy: the filesystem decides, so the table names it.
            fs = subprocess.run(["stat", "-f", "-c", "%T", str(tmp)], capture_output=True, text=True).stdout.strip()
        finally:
            server.stop()
    _report(rows, samples, fs)


def _measure(tmp: Path, server: SshServer, samples: int) -> dict[str, list[float]]:
    app = make_app_repo(tmp / "app")
    (app / ".vendor-build.py").write_text(BUILD_VENDOR)
    app_commit(app, "v1")  # commits the generator too (app_commit adds everything)
    base = tmp / "srv"
    sites = {}
    for layout in LAYOUTS:
        decl = make_decl_repo(tmp / f"decl-{layout}")
        domain = f"{layout}.example.com"
        extra = {"copy_from_previous": ["vendor"]} if layout == "copy" else {}
        write_site(decl, domain, server=server.destination, base_path=str(base), repository=str(app),
                   script=SCRIPT, keep=2, **extra)
        settings = settings_for(decl, tmp / f"state-{layout}", identity_file=server.identity_file,
                                known_hosts=server.known_hosts, deploy_timeout=600)
        sites[layout] = (domain, settings)
        _deploy(settings, domain)  # the first deploy builds vendor/ from nothing
    rows: dict[str, list[float]] = {k: [] for k in ("shared", "copy", "step", "scratch")}
    for n in range(samples):
        app_commit(app, f"v{n + 2}")
        order = LAYOUTS if n % 2 == 0 else LAYOUTS[::-1]  # alternate: neither layout always goes first
        for layout in order:
            domain, settings = sites[layout]
            rows[layout].append(_deploy(settings, domain))
        rows["step"].append(_copy_took(base, sites["copy"][0]))
        rows["scratch"].append(_scratch(tmp))
    return rows


def _deploy(settings: Settings, domain: str) -> float:
    # The previous step's files reach the disk first (untimed): no deploy pays for another's writeback.
    os.sync()
    started = time.perf_counter()
    outcome = reconcile(settings, domain)[domain]
    took = time.perf_counter() - started
    if outcome.sync != "Synced":
        raise RuntimeError(f"{domain}: {outcome.sync}: {outcome.message}")
    return took


def _copy_took(base: Path, domain: str) -> float:
    """The copy step of the live release's build, as its deployment.log says it took."""
    log = (base / domain / LOG_NAME).read_text()
    took = _TOOK.search(log)
    if took is None:
        raise RuntimeError(f"{domain}: the build copied no vendor/:\n{log}")
    return int(took.group(1)) / 1000


def _scratch(tmp: Path) -> float:
    """vendor/ built from nothing by the script's generator (composer install with no vendor/)."""
    where = tmp / "scratch"
    where.mkdir()
    os.sync()
    try:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD_VENDOR], cwd=where, check=True)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(where)


def _report(rows: dict[str, list[float]], samples: int, fs: str) -> None:
    def median(name: str) -> float:
        return statistics.median(rows[name])

    labels = {"shared": "re-deploy, vendor shared (baseline)",
              "copy": "re-deploy, copy_from_previous = [vendor]",
              "step": "  of which the copy step (cp --reflink=auto -a)",
              "scratch": "vendor/ built from nothing (for scale)"}
    print(f"copy_from_previous: re-deploy with a {FILES:,}-file vendor/, real sshd on 127.0.0.1, "
          f"filesystem {fs or '?'} (n = {samples})")
    print(f"{'measure':<52}{'median':>10}{'min':>10}{'max':>10}")
    for name, label in labels.items():
        print(f"{label:<52}{median(name) * 1000:>8.0f}ms{min(rows[name]) * 1000:>8.0f}ms"
              f"{max(rows[name]) * 1000:>8.0f}ms")
    print(f"ratios: copy re-deploy / shared re-deploy {median('copy') / median('shared'):.2f}; "
          f"copy step / shared re-deploy {median('step') / median('shared'):.2f}; "
          f"copy step / vendor from nothing {median('step') / median('scratch'):.2f}")


if __name__ == "__main__":
    main()
