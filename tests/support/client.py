"""An HTTP client for tests of the daemon's endpoint: one request, and its answer whatever the
status (an HTTP error is an answer to look at, not an exception), so each test asserts on
status, body and headers alike."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    headers: Message

    def json(self) -> Any:
        return json.loads(self.text or "null")

    @property
    def body(self) -> Any:
        """The body decoded as JSON when it is JSON, else the text."""
        try:
            return self.json()
        except ValueError:
            return self.text


def call(url: str, *, method: str | None = None, data: bytes | None = None, json_body: Any = None,
         headers: dict[str, str] | None = None, token: str | None = None, timeout: float = 15) -> Answer:
    """GET `url`, or POST when there is a body (`data`, or `json_body` sent as JSON); `token`
    goes in an `Authorization: Bearer` header."""
    headers = dict(headers or {})
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.read().decode(errors="replace"), response.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return Answer(exc.code, exc.read().decode(errors="replace"), exc.headers)


def metric(root: str, name: str, token: str) -> float:
    """The value of the sample `name` on the daemon's /metrics (the first one, for a labelled metric)."""
    text = call(root + "/metrics", token=token).text
    return next(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def passes(root: str, token: str) -> float:
    """How many passes the daemon has finished."""
    return metric(root, "reconciler_pass_duration_seconds_count", token)
