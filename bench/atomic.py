"""atomic: resolutions of {base}/{domain}/public while the site symlink is switched N times.

Compares reconciler's switch (new link + rename over the old one) with `ln -sfn`, the
baseline many tools use, on this machine. A failed resolution is a request that found no site.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from reconciler.core.layout import SitePaths
from reconciler.remote.protocol.site_steps import switch

DOMAIN = "bench.example.com"


def _resolver(path: str, stop: multiprocessing.synchronize.Event, counts: multiprocessing.Array) -> None:  # type: ignore[name-defined]
    ok = failed = 0
    while not stop.is_set():
        try:
            os.stat(path)
            ok += 1
        except OSError:
            failed += 1
    counts[0], counts[1] = ok, failed


def _run(base: Path, script: str, switches: int) -> tuple[int, int, float]:
    stop = multiprocessing.Event()
    counts = multiprocessing.Array("q", 2)
    worker = multiprocessing.Process(target=_resolver, args=(str(base / DOMAIN / "public"), stop, counts),
                                     daemon=True)
    worker.start()
    try:
        time.sleep(0.2)
        started = time.perf_counter()
        # One shell reads every switch from stdin (too long for an argument), so the measurement
        # is the switch, not process start-up.
        subprocess.run(["/bin/sh", "-s"], input=script, text=True, check=True)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        worker.join()
    return counts[0], counts[1], elapsed


def main(switches: int = 10_000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        paths = SitePaths(str(base), DOMAIN)
        releases = ["01012025-000000", "02012025-000000"]
        for name in releases:
            (Path(paths.release(name)) / "public").mkdir(parents=True)
        os.symlink(paths.link_target(releases[0]), paths.site_link)
        ours = "\n".join(switch(paths, releases[i % 2]).text for i in range(switches))
        theirs = "\n".join(f"ln -sfn {paths.link_target(releases[i % 2])} {paths.site_link}"
                           for i in range(switches))
        rows = [("reconciler (rename)", *_run(base, ours, switches)),
                ("baseline: ln -sfn", *_run(base, theirs, switches))]
    print(f"atomic: {switches} switches while another process resolves {{base}}/{{domain}}/public")
    print(f"{'method':<22}{'resolutions':>12}{'failed':>8}{'switch/s':>10}")
    for name, ok, failed, elapsed in rows:
        print(f"{name:<22}{ok + failed:>12}{failed:>8}{switches / elapsed:>10.0f}")
    base_rate = switches / rows[1][3]
    print(f"speed ratio (reconciler / ln -sfn): {(switches / rows[0][3]) / base_rate:.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
