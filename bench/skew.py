"""skew: a site on two servers (two real sshds, each in its own mount namespace with its own
directory at the same base_path): the time between the two servers' switches of one deploy.

Phase 2 switches every server at once with every lock already held, so the skew is what one
switch command costs, not a build. Each sample is a new app commit and one pass; two threads
watch the two site symlinks (the real directories) and note when each changed. Baseline, in the
same run: one SSH round trip of the switch command alone. Target: skew under 100 ms on loopback.
Needs root (mount namespaces), like the tests' `sshd_pair`.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import use_git_identity
from tests.support import app_commit, make_app_repo, make_decl_repo, reconcile, settings_for, write_site
from tests.support.sshd import mount_namespace_problem, start_sshd_pair

DOMAIN = "skew.example.com"


class Watch:
    """Notes when a site symlink next points somewhere else."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.changed: float | None = None
        self.before = os.readlink(link)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if os.readlink(self.link) != self.before:
                    self.changed = time.perf_counter()
                    return
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def main(samples: int = 20) -> None:
    problem = mount_namespace_problem()
    if problem is not None:
        print(f"skew: skipped: {problem}")
        return
    use_git_identity()
    skews, passes, rtts = [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pair = start_sshd_pair(tmp / "pair")
        try:
            a, b = pair.servers
            app = make_app_repo(tmp / "app")
            decl = make_decl_repo(tmp / "decl")
            write_site(decl, DOMAIN, servers=[a.destination, b.destination], base_path=pair.base_path,
                       repository=str(app), script="true\n")
            settings = settings_for(decl, tmp / "state", identity_file=pair.identity_file,
                                    known_hosts=pair.known_hosts)
            assert reconcile(settings)[DOMAIN].sync == "Synced"
            links = [pair.site(server, DOMAIN).link for server in pair.servers]
            for n in range(samples):
                app_commit(app, f"v{n + 2}")
                watches = [Watch(link) for link in links]
                started = time.perf_counter()
                outcome = reconcile(settings)[DOMAIN]
                passes.append(time.perf_counter() - started)
                for watch in watches:
                    watch.close()
                assert outcome.sync == "Synced", outcome
                moments = [w.changed for w in watches]
                assert all(m is not None for m in moments), "a server did not switch"
                skews.append(abs(moments[0] - moments[1]))  # type: ignore[operator]
            for _ in range(10):
                started = time.perf_counter()
                subprocess.run(["ssh", "-F", str(a.ssh_config), "testserver", "true"], check=True)
                rtts.append(time.perf_counter() - started)
        finally:
            pair.stop()
    baseline = statistics.median(rtts)
    print(f"skew: {samples} deploys of one site to two servers (two sshds, separate filesystems)")
    print(f"{'measure':<52}{'median':>9}{'max':>9}")
    print(f"{'switch skew between the servers':<52}{statistics.median(skews) * 1000:>7.1f}ms"
          f"{max(skews) * 1000:>7.1f}ms")
    print(f"{'the whole pass (build on both, switch both)':<52}{statistics.median(passes) * 1000:>7.0f}ms"
          f"{max(passes) * 1000:>7.0f}ms")
    print(f"{'baseline: one ssh round trip (new connection)':<52}{baseline * 1000:>7.0f}ms")
    print(f"ratio median skew / one ssh round trip: {statistics.median(skews) / baseline:.2f} (target: skew < 100 ms)")
    sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
