"""A webhook receiver for notification tests: an HTTP server on 127.0.0.1 recording what is
POSTed to it (the body decoded as JSON when it is JSON, else as text, and its content type),
answering a scripted status per path."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Post:
    path: str
    answered: int
    body: Any
    content_type: str = ""


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording POSTs; `script[path]` lists the statuses to answer
    (then 200)."""

    server: ThreadingHTTPServer
    posts: list[Post] = field(default_factory=list)
    script: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def record(self, path: str, body: Any, content_type: str = "") -> int:
        with self.lock:
            statuses = self.script.get(path) or []
            status = statuses.pop(0) if statuses else 200
            self.posts.append(Post(path, status, body, content_type))
            return status

    def at(self, path: str, event: str | None = None, domain: str | None = None, delivered: bool = True) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == path and (event is None or _field(p.body, "event") == event)
                    and (domain is None or _field(p.body, "domain") == domain) and (not delivered or p.answered < 300)]



def _field(body: Any, name: str) -> Any:
    return body.get(name) if isinstance(body, dict) else None


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A Receiver serving on 127.0.0.1 until the block ends."""
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            body: Any
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            status = holder[0].record(self.path, body, content_type)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    holder.append(Receiver(server))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
