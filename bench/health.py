"""health: how long a broken release stays live before the automatic switch back (issue 12).

A site on a real sshd (127.0.0.1) with `[health] url`, `retries = 2`, `interval = 0.5`; a real
web server serves it through the site symlink; a client keeps requesting it (HTTP load) and
records every answer. Each round commits a release that answers 500, and one pass deploys it:
the reconciler switches, the check fails three times, the previous release is switched back.
The broken window is what the client saw: from its first 500 to its last 500 of the round.

Baseline, measured in the same run: the check alone (the same health command against the same
broken release, no deploy), which is the least any switch-back can take. Target: under 2 s.
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from reconciler.core.health import HealthCheck
from reconciler.remote.health import Probe, run
from reconciler.remote.transport.local import LocalTransport
from tests.support import app_commit, make_app_repo, make_decl_repo, reconcile, settings_for, write_site
from tests.support.sshd import start_sshd
from tests.support.webapp import SiteServer

DOMAIN = "health.example.com"


class Load:
    """A client requesting the site back to back, recording (time, status)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set():
            try:
                connection.request("GET", "/up", headers={"Host": DOMAIN})
                response = connection.getresponse()
                response.read()
                self.answers.append((time.monotonic(), response.status))
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    def window(self, since: float) -> float:
        broken = [t for t, status in self.answers if t >= since and status >= 500]
        return broken[-1] - broken[0] if broken else 0.0

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


def main(rounds: int = 10) -> None:
    check = HealthCheck(url="http://127.0.0.1:0/up", retries=2, interval=0.5, timeout=2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_sshd(tmp / "sshd")
        base = tmp / "srv"
        base.mkdir()
        web = SiteServer(base)
        check = check.model_copy(update={"url": web.url})
        load = Load(web.port)
        try:
            app = make_app_repo(tmp / "app")
            app_commit(app, "v0", {"public/health": "200\nOK\n"})
            decl = make_decl_repo(tmp / "decl")
            write_site(decl, DOMAIN, server=server.destination, base_path=str(base), repository=str(app),
                       script="true\n", health={"url": web.url, "retries": 2, "interval": 0.5, "timeout": 2})
            settings = settings_for(decl, tmp / "state", identity_file=server.identity_file,
                                    known_hosts=server.known_hosts)
            assert reconcile(settings)[DOMAIN].sync == "Synced"
            windows, passes = [], []
            for n in range(rounds):
                app_commit(app, f"broken {n}", {"public/health": f"500\nbroken {n}\n"})
                since = time.monotonic()
                outcome = reconcile(settings)[DOMAIN]
                passes.append(time.monotonic() - since)
                assert outcome.sync == "Failed" and "health check failed" in outcome.message, outcome
                time.sleep(0.2)  # the load's last answers of the round
                windows.append(load.window(since))
            live = (base / DOMAIN).resolve()
            (live / "public" / "health").write_text("500\nbroken\n")
            baseline = []
            for _ in range(3):
                started = time.monotonic()
                (result,) = asyncio.run(run(LocalTransport(), [Probe(str(live), DOMAIN, check)]))
                baseline.append(time.monotonic() - started)
                assert not result.ok
        finally:
            load.close()
            web.stop()
            server.stop()
    floor = statistics.median(baseline)
    print(f"health: {rounds} broken deploys over sshd, [health] url with retries = 2, interval = 0.5, under HTTP load "
          f"({len(load.answers)} requests)")
    print(f"{'measure':<58}{'median':>9}{'max':>9}")
    print(f"{'broken release live (first to last 500 the client saw)':<58}{statistics.median(windows):>8.2f}s"
          f"{max(windows):>8.2f}s")
    print(f"{'the whole pass (build, switch, check, switch back)':<58}{statistics.median(passes):>8.2f}s"
          f"{max(passes):>8.2f}s")
    print(f"{'baseline: the failing check alone (3 tries)':<58}{floor:>8.2f}s{max(baseline):>8.2f}s")
    print(f"ratio broken-window / check alone: {statistics.median(windows) / floor:.2f} (target: window < 2 s)")
    sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
