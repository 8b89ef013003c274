"""What the operator is told (issue 21 item 7), for a site on one server and on two: a `failed`
notification names the server whose build failed. The real daemon (`reconciler run`) posts to a
webhook receiver on 127.0.0.1; real sshds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.fleet import Fleet
from tests.support.process import Daemons
from tests.support.wait import wait_until

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see


@pytest.fixture(name="events")
def events_fixture() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver: (its URL, the event objects posted to it so far)."""
    posted: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            posted.append(json.loads(self.rfile.read(length) or b"{}"))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", posted
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_failed_notification_names_the_server_whose_build_failed(
        fleet: Fleet, daemons: Daemons, events: tuple[str, list[dict[str, Any]]]) -> None:
    url, posted = events
    with fleet.config.open("a") as config:
        config.write(f'\n[[notify]]\nurl = "{url}"\n')
    fleet.declare(script=f"test ! -e {fleet.path('broken')} || {{ echo 'composer: mirror down'; exit 3; }}\n")
    assert fleet.reconcile().rc == 0
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v2")
    daemon = daemons.launcher(fleet.tmp, fleet.config).start()
    failed = wait_until(lambda: [e for e in posted if e.get("event") == "failed"], 30, "a failed event",
                        daemon.tail)
    daemon.stop()
    text = failed[0]["text"].replace("\u200b", "")  # the text makes every @ inert for chat
    assert fleet.last.destination in text, text
    assert all(server.destination not in text for server in fleet.servers if server is not fleet.last), text
