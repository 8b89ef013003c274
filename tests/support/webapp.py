"""A small real web server for health tests: it serves sites the way nginx would, through the
site symlink, so what it answers is what the live release holds.

GET /up with `Host: <domain>` reads `<base>/<domain>/public/health` (resolved through the symlink
at every request): its first line is the HTTP status code, the rest the body. A missing file is
a 404; a status line that is no number is a 500. Every request is counted per status code.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class SiteServer:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.answers: Counter[int] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                domain = (self.headers.get("Host") or "").split(":")[0]
                code, body = owner.answer(domain, self.path)
                owner.answers[code] += 1
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, domain: str, path: str) -> tuple[int, str]:
        if path != "/up" or not domain or "/" in domain:
            return 404, "not found\n"
        try:
            text = (self.base / domain / "public" / "health").read_text()
        except OSError:
            return 404, "no health file\n"
        first, _, body = text.partition("\n")
        return (int(first), body) if first.strip().isdigit() else (500, body)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/up"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
