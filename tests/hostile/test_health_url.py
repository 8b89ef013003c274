"""A `[health] url` is fetched as written: one request per try.

curl expands `{a,b}` and `[1-100000]` in a URL into many requests unless told not to
(`--globoff`): a declaration's URL then costs the site's web server that many requests per try,
and the bodies of all but the first land on stdout, where the health command reads the status
code (`HTTP 200200200`). Here a real HTTP server on 127.0.0.1 counts the requests of one real
pass (the check after the deploy's switch, run by curl on this machine, `server = "local"`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support import World


class CountingServer:
    """Answers every GET with `status` and counts the requests, with their paths."""

    def __init__(self, status: int) -> None:
        self.paths: list[str] = []
        counter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                counter.paths.append(self.path)
                body = b"OK\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(name="healthy")
def healthy_fixture() -> Iterator[CountingServer]:
    server = CountingServer(200)
    yield server
    server.stop()


@pytest.fixture(name="failing")
def failing_fixture() -> Iterator[CountingServer]:
    server = CountingServer(503)
    yield server
    server.stop()


GLOBS = ["/health[1-3]", "/health{a,b,c}", "/h{a,b}/[1-2]?x={1,2}"]


def _status(world: World) -> dict[str, str]:
    view: dict[str, str] = world.status_views()[world.domain]
    return view


@pytest.mark.parametrize("path", GLOBS)
def test_a_url_with_glob_characters_is_one_request_per_try(tmp_path: Path, healthy: CountingServer,
                                                           path: str) -> None:
    world = World.create(tmp_path)
    world.declare(health={"url": healthy.url + path, "contains": "OK", "retries": 0})
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, out + err
    assert len(healthy.paths) == 1, healthy.paths
    assert _status(world)["health"] == "Healthy"


def test_every_try_of_a_failing_glob_url_is_one_request_and_its_status_reads_clean(
        tmp_path: Path, failing: CountingServer) -> None:
    world = World.create(tmp_path)
    world.declare(health={"url": failing.url + GLOBS[0], "retries": 2, "interval": 0})
    rc, out, err = world.run_cli("reconcile")
    assert rc == 1, out + err
    assert len(failing.paths) == 3, failing.paths
    assert "HTTP 503 (after 3 tries)" in _status(world)["message"], _status(world)
