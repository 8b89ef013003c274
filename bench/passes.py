"""passes: one deploy and one no-op pass on the demo setup (local transport, SQLite), in process
and as a whole CLI run. Baseline: a bare `git clone` of the same app repository, the floor of
any deploy that clones, measured in the same run."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import use_git_identity
from reconciler.config import Settings
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site

RUNS = 7


def _pass(settings: Settings) -> float:
    async def go() -> float:
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            started = time.perf_counter()
            await reconciler.run_pass()
            return time.perf_counter() - started
        finally:
            await reconciler.close()
            reconciler.store.close()

    return asyncio.run(go())


def main() -> None:
    use_git_identity()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        app = make_app_repo(tmp / "app")
        decl = make_decl_repo(tmp / "decl")
        write_site(decl, "demo.example.com", server="local", base_path=str(tmp / "srv"), repository=str(app),
                   script='echo "composer install (simulated)"\n', keep=3)
        settings = Settings(repo=decl, state_dir=tmp / "state", allow_local=True)
        config = tmp / "reconciler.toml"
        config.write_text(f'repo = "{decl}"\nstate_dir = "{tmp / "state"}"\nallow_local = true\n')
        deploys, noops, clis, clones = [], [], [], []
        for n in range(RUNS):
            app_commit(app, f"v{n}")
            deploys.append(_pass(settings))
            noops.append(_pass(settings))
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "reconciler", "--config", str(config), "reconcile"],
                           check=True, stdout=subprocess.DEVNULL)
            clis.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(["git", "clone", "-q", str(app), str(tmp / f"clone{n}")], check=True)
            clones.append(time.perf_counter() - started)
    ms = lambda values: f"{statistics.median(values) * 1000:.0f} ms"  # noqa: E731
    print(f"passes: demo site on the local transport, median of {RUNS}")
    print(f"{'measure':<44}{'median':>10}")
    print(f"{'baseline: git clone of the app':<44}{ms(clones):>10}")
    print(f"{'one deploy (pass that deploys, in process)':<44}{ms(deploys):>10}")
    print(f"{'one no-op pass (in process)':<44}{ms(noops):>10}")
    print(f"{'one no-op pass (whole CLI process)':<44}{ms(clis):>10}")
    print(f"ratio deploy / git clone: {statistics.median(deploys) / statistics.median(clones):.1f}")


if __name__ == "__main__":
    main()
