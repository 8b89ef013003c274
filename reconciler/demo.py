"""`make demo`: a throwaway sandbox under state/demo/ that walks through the main job.

It builds a Laravel-like app repository and a declarations repository with one
`server = "local"` site, then: deploy -> new app commit -> pin (rollback) -> unpin,
printing `reconciler status` after each step, and finally times a deploy and a no-op pass.
Everything runs through the real CLI on the embedded default (local transport, SQLite).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .cli import main as cli

DOMAIN = "shop.example.test"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


def _step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m" if sys.stdout.isatty() else f"\n== {title}", flush=True)


def _reconciler(root: Path, *args: str) -> int:
    argv = ["--repo", str(root / "declarations"), "--state-dir", str(root / "state"), *args]
    print("$ reconciler " + " ".join(args), flush=True)
    code = cli(argv)
    sys.stdout.flush()
    return code


def build_sandbox(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)
    app, decl = root / "app", root / "declarations"
    (app / "public").mkdir(parents=True)
    (app / "storage" / "logs").mkdir(parents=True)
    (app / "storage" / "logs" / ".gitkeep").write_text("")
    (app / "public" / "index.php").write_text("<?php echo 'Hello from v1';\n")
    _git(app, "init", "-q", "-b", "main")
    _commit(app, "v1")
    (decl / "sites.d").mkdir(parents=True)
    _git(decl, "init", "-q", "-b", "main")
    (decl / "sites.d" / f"{DOMAIN}.toml").write_text(
        '# The demo site: deployed on this machine (server = "local").\n'
        'server     = "local"\n'
        f'base_path  = "{root / "srv"}"\n'
        f'repository = "{app}"\n'
        'branch     = "main"\n'
        'script     = """\n'
        'echo "composer install --no-dev (simulated)"\n'
        'cat public/index.php\n'
        '"""\n'
        "keep       = 5\n"
    )


def _site_says(root: Path) -> str:
    index = root / "srv" / DOMAIN / "public" / "index.php"
    target = os.readlink(root / "srv" / DOMAIN)
    return f"{root / 'srv' / DOMAIN} -> {target}  serves: {index.read_text().strip()}"


def main() -> int:
    for key, value in {"GIT_AUTHOR_NAME": "reconciler-demo", "GIT_AUTHOR_EMAIL": "demo@localhost",
                       "GIT_COMMITTER_NAME": "reconciler-demo", "GIT_COMMITTER_EMAIL": "demo@localhost"}.items():
        os.environ.setdefault(key, value)
    root = (Path("state") / "demo").resolve()
    build_sandbox(root)
    app, decl = root / "app", root / "declarations"

    _step("1. Commit a site declaration, reconcile: provision + first deploy")
    _commit(decl, f"declare {DOMAIN}")
    _reconciler(root, "reconcile")
    _reconciler(root, "status")
    print(_site_says(root))

    _step("2. A new commit on the app branch: a new release goes live")
    (app / "public" / "index.php").write_text("<?php echo 'Hello from v2';\n")
    _commit(app, "v2")
    _reconciler(root, "reconcile")
    _reconciler(root, "history", DOMAIN)
    print(_site_says(root))

    _step("3. Roll back: `reconciler rollback` commits a pin; the pass switches the symlink, no rebuild")
    _reconciler(root, "rollback", DOMAIN)
    _reconciler(root, "reconcile")
    _reconciler(root, "status")
    print(_site_says(root))

    _step("4. Unpin: back to the branch head, again without rebuilding")
    _reconciler(root, "unpin", DOMAIN)
    _reconciler(root, "reconcile")
    _reconciler(root, "status")
    print(_site_says(root))

    _step("5. Timings on this machine (median of 5)")
    deploys, noops = [], []
    for n in range(5):
        (app / "public" / "index.php").write_text(f"<?php echo 'timing {n}';\n")
        _commit(app, f"timing {n}")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "reconciler", "--repo", str(decl), "--state-dir",
                        str(root / "state"), "reconcile"], check=True, stdout=subprocess.DEVNULL)
        deploys.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "reconciler", "--repo", str(decl), "--state-dir",
                        str(root / "state"), "reconcile"], check=True, stdout=subprocess.DEVNULL)
        noops.append(time.perf_counter() - started)
    print(f"one deploy (whole CLI run): median {statistics.median(deploys) * 1000:.0f} ms")
    print(f"one no-op pass (whole CLI run): median {statistics.median(noops) * 1000:.0f} ms")
    print(f"\nThe sandbox stays in {root}. Try: .venv/bin/reconciler --repo {decl} --state-dir "
          f"{root / 'state'} status")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
