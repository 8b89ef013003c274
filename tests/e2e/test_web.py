"""End to end: the daemon's HTTP endpoint (`listen`) against the REAL daemon process.

`reconciler run` is started as a separate process with `listen`, `api_token` and
`webhook_secret`, sites on the local transport. The tests talk plain HTTP (urllib and
http.client) like Prometheus, a script or a forge would, with `Authorization: Bearer` on
every read and write: /metrics in the exposition format, the JSON API compared with the CLI's
`status --json` / `history --json` on the same state, the server-sent-events streams,
token-guarded rollback and the HMAC-verified git webhook. The attacks on the endpoint (no
token, foreign Host, cookies, replays, abandoned streams) are in tests/hostile/test_web_*.py.
Every wait is bounded polling; nothing asserts on wall-clock durations.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests import support
from tests.support import (
    HISTORY_KEYS,
    STATUS_KEYS,
    DaemonProcess,
    Daemons,
    Launcher,
    SiteOnDisk,
    app_commit,
    free_port,
    git,
    make_app_repo,
    wait_until,
    write_site,
)
from tests.support.client import call

SHOP = "shop.example.com"
BLOG = "blog.example.com"
BAD = "bad.example.com"
TOKEN = "api-token-for-tests"
SECRET = "webhook-secret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEPLOY_TIMEOUT = 30.0  # bound for one local deploy (clone, script) to show up


def http_request(url: str, *, data: bytes | None = None, json_body: Any = None,
                 headers: dict[str, str] | None = None, method: str | None = None) -> tuple[int, Any]:
    """(status, body decoded as JSON when it is JSON, else text); HTTP errors are answers too."""
    answer = call(url, data=data, json_body=json_body, headers=headers, method=method)
    return answer.status, answer.body


class EventStream:
    """A server-sent-events client: one connection, read on a thread; events arrive in a queue
    as (event, data) in order, and None once the server ended the stream."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
        self.conn.request("GET", parts.path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")
        if self.sock is not None:
            self.sock.settimeout(None)  # idle streams are fine; close() ends the reader
        self.queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self.received: list[tuple[str, str]] = []
        self.ended = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event, data = "message", []
        try:
            while True:
                line = self.response.readline()
                if not line:
                    break
                text = line.decode().rstrip("\r\n")
                if not text:
                    if data:
                        self.queue.put((event, "\n".join(data)))
                    event, data = "message", []
                elif text.startswith(":"):
                    continue
                else:
                    name, _, value = text.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            self.queue.put(None)

    def next(self, timeout: float, what: str) -> tuple[str, str] | None:
        """The next event (None: the stream ended); fails after `timeout` seconds of silence."""
        if self.ended:
            return None
        try:
            item = self.queue.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no server-sent event within {timeout:.0f}s while waiting for {what}; "
                        f"received so far: {[e for e, _ in self.received]}", pytrace=False)
        if item is None:
            self.ended = True
        else:
            self.received.append(item)
        return item

    def until(self, predicate: Callable[[tuple[str, str]], Any], timeout: float, what: str) -> tuple[str, str]:
        """Read events until one satisfies `predicate`; fails if the stream ends first."""
        while True:
            item = self.next(timeout, what)
            if item is None:
                pytest.fail(f"the stream ended before {what}; received: {self.received}", pytrace=False)
            if predicate(item):
                return item

    def rest(self, timeout: float, what: str) -> list[tuple[str, str]]:
        """Every event up to the end of the stream."""
        while self.next(timeout, what) is not None:
            pass
        return self.received

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=5)  # the reader sees the end of the stream and stops
        self.response.close()
        self.conn.close()


@dataclass
class Web(support.World):
    """Sites on "local" and the daemon with `listen`, `api_token` and `webhook_secret` on `port`."""

    port: int = field(default_factory=free_port)
    daemon: DaemonProcess | None = None
    streams: list[EventStream] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def run(self) -> Launcher | None:
        """The daemon's launcher, once started (its `cli`, `status` and `history` run the real CLI)."""
        return self._launcher

    def declare(self, domain: str | None = SHOP, **fields: Any) -> Path:
        return super().declare(domain, **fields)

    def site(self, domain: str = SHOP) -> SiteOnDisk:
        return self.on_disk(domain)

    def start(self, *, interval: float = 2, host: str = "127.0.0.1", **extra: Any) -> DaemonProcess:
        self.write_config(interval=interval, listen=f"{host}:{self.port}", api_token=TOKEN, webhook_secret=SECRET,
                          **extra)
        daemon = self.start_daemon()
        self.daemon = daemon

        def answering() -> bool:
            assert daemon.alive(), f"the daemon exited\n{daemon.tail()}"
            return http_request(self.root + "/api/sites", headers=AUTH)[0] == 200

        self.wait(answering, f"the daemon's HTTP endpoint on port {self.port}")
        return daemon

    def stream(self, path: str, headers: dict[str, str] | None = None, auth: bool = True) -> EventStream:
        """An event stream; with `auth`, the bearer token is sent."""
        events = EventStream(self.root + path, {**(AUTH if auth else {}), **(headers or {})})
        self.streams.append(events)
        return events

    def get(self, path: str, auth: bool = True, **kwargs: Any) -> tuple[int, Any]:
        """A request to the daemon; with `auth`, the bearer token is sent (unless `headers` say otherwise)."""
        kwargs["headers"] = {**(AUTH if auth else {}), **(kwargs.get("headers") or {})}
        return http_request(self.root + path, **kwargs)

    def api_sites(self) -> dict[str, dict[str, Any]]:
        status, body = self.get("/api/sites")
        assert status == 200, (status, body)
        return {view["domain"]: view for view in body}

    def api_history(self, domain: str = SHOP) -> list[dict[str, Any]]:
        status, body = self.get(f"/api/sites/{domain}/deployments")
        assert status == 200, (status, body)
        views: list[dict[str, Any]] = body
        return views

    def live(self, commit: str, domain: str = SHOP) -> str:
        """Wait until `commit` is live and the site Synced; returns the active release."""

        def done() -> str | None:
            view = self.api_sites().get(domain) or {}
            if self.site(domain).live_commit() == commit and view.get("sync") == "Synced" \
                    and view.get("active_commit") == commit:
                return self.site(domain).active()
            return None

        release: str = wait_until(done, DEPLOY_TIMEOUT, f"{domain} live at {commit[:12]}", self.diagnostics)
        return release

    def close(self) -> None:
        for events in self.streams:
            events.close()


@pytest.fixture
def web(tmp_path: Path, daemons: Daemons) -> Iterator[Web]:
    world = Web.create(tmp_path, daemons=daemons, domain=SHOP)
    try:
        yield world
    finally:
        world.close()
        daemons.close()


def holds_for(predicate: Callable[[], bool], seconds: float) -> bool:
    """True when `predicate` stays true for `seconds` (polled): for things that must NOT happen."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.1)
    return predicate()


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD")


# --- /metrics ------------------------------------------------------------------------------------


def scrape(web: Web) -> list[Sample]:
    status, text = web.get("/metrics")
    assert status == 200, (status, text)
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def values(samples: list[Sample], name: str, **labels: str) -> list[float]:
    return [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = values(samples, name, **labels)
    assert len(found) == 1, f"{name}{labels}: expected one sample, got {found}"
    return found[0]


def test_metrics_and_api_shapes_match_the_cli(web: Web) -> None:
    web.declare(SHOP, script="echo shop-build-marker\n")
    web.declare(BLOG, script="echo blog-before-failure\nexit 3\n")
    write_site(web.decl, BAD, raw='server = "local"\nrepository = "/nowhere"\nbogus = 1\n')  # Invalid
    web.start()
    assert web.run is not None
    commit = head(web.app)
    web.live(commit, SHOP)
    wait_until(lambda: web.api_sites()[BLOG]["sync"] == "Failed", DEPLOY_TIMEOUT, f"{BLOG} Failed", web.diagnostics)

    # -- /metrics, parsed as Prometheus does ------------------------------------------------------
    # The CLI's view of the same state (each call is a process start, so it is taken once and
    # reused; retried only while a pass in between still changes a message).
    launcher = web.run
    status = wait_until(lambda: (cli := launcher.status()) == web.api_sites() and cli, 30,
                        "status --json and /api/sites to agree", web.diagnostics)
    cli_history = {domain: wait_until(lambda d=domain: (cli := launcher.history(d)) == web.api_history(d) and cli,
                                      30, f"history --json and the API to agree on {domain}", web.diagnostics)
                   for domain in (SHOP, BLOG)}
    samples = scrape(web)  # with the token, as a Prometheus scrape config sends it
    info = [s for s in samples if s.name == "reconciler_site_info"]
    assert {s.labels["domain"] for s in info} >= {BLOG, SHOP}
    for sample in info:
        view = status[sample.labels["domain"]]
        assert sample.value == 1
        assert set(sample.labels) == {"domain", "server", "sync", "health"}
        assert (sample.labels["server"], sample.labels["sync"], sample.labels["health"]) == (
            "local", view["sync"], view["health"]), (sample, view)
    assert value(samples, "reconciler_site_info", domain=SHOP, sync="Synced", health="Healthy") == 1
    assert value(samples, "reconciler_site_info", domain=BLOG, sync="Failed") == 1

    finished = [d for domain in (SHOP, BLOG) for d in cli_history[domain] if d["status"] in ("success", "failed")]
    assert [d["status"] for d in finished] == ["success", "failed"], finished
    assert value(samples, "reconciler_deploys_total", result="success") == 1
    assert value(samples, "reconciler_deploys_total", result="failed") == 1
    assert value(samples, "reconciler_deploy_duration_seconds_count") == len(finished)
    assert value(samples, "reconciler_deploy_duration_seconds_bucket", le="+Inf") == len(finished)
    assert value(samples, "reconciler_deploy_duration_seconds_sum") == pytest.approx(
        sum(d["duration_ms"] for d in finished) / 1000)
    buckets = sorted((float(s.labels["le"]), s.value) for s in samples
                     if s.name == "reconciler_deploy_duration_seconds_bucket")
    assert [count for _, count in buckets] == sorted(count for _, count in buckets), "buckets are cumulative"
    passes = value(samples, "reconciler_pass_duration_seconds_count")
    assert passes > 0
    assert value(samples, "reconciler_pass_duration_seconds_bucket", le="+Inf") == passes
    assert value(samples, "reconciler_last_successful_pass_timestamp_seconds") > 0

    # -- the JSON API: exactly the SPEC shapes, the same values as the CLI --------------------------
    api = web.api_sites()
    for view in api.values():
        assert set(view) == STATUS_KEYS, sorted(view)
    assert api.keys() == status.keys()  # equal values: established above, while waiting for them to agree
    assert api[SHOP]["sync"] == "Synced" and api[SHOP]["active_commit"] == commit
    assert api[BAD]["sync"] == "Invalid" and "bogus" in api[BAD]["message"]
    for domain in (SHOP, BLOG):
        history = web.api_history(domain)
        assert history, domain
        for row in history:
            assert set(row) == HISTORY_KEYS, sorted(row)
        assert history == cli_history[domain]
    shop_history = web.api_history(SHOP)
    assert shop_history[0]["is_active"] and not shop_history[0]["can_rollback"]
    assert shop_history[0]["commit_sha"] == commit and shop_history[0]["status"] == "success"

    # Unknown site or deployment: 404 with an error, never an empty 200.
    status_code, body = web.get("/api/sites/nope.example.com/deployments")
    assert status_code == 404 and "error" in body, (status_code, body)
    blog_id = web.api_history(BLOG)[0]["id"]
    for path in (f"/api/sites/nope.example.com/deployments/{blog_id}/log",
                 f"/api/sites/{SHOP}/deployments/{blog_id}/log",  # exists, but is another site's
                 f"/api/sites/{SHOP}/deployments/999999/log",
                 f"/api/sites/{SHOP}/deployments/abc/log"):
        status_code, body = web.get(path)
        assert status_code == 404, (path, status_code, body)

    # -- the log of a finished deployment: its output, then `end` -----------------------------------
    for domain, marker in ((SHOP, "shop-build-marker"), (BLOG, "blog-before-failure")):
        deployment = web.api_history(domain)[0]
        events = web.stream(f"/api/sites/{domain}/deployments/{deployment['id']}/log")
        assert events.status == 200 and events.content_type.startswith("text/event-stream")
        received = events.rest(15, f"the log of {domain} deployment {deployment['id']}")
        assert received, domain
        assert received[-1][0] == "end", received
        assert all(name == "log" for name, _ in received[:-1]), received
        text = "".join(json.loads(data) for _, data in received[:-1])
        assert marker in text, text
    assert "exit 3" in text, text

    # Last (it fails today): every declared site has a reconciler_site_info sample, the Invalid one
    # too, so that an alert on sync="Invalid" can fire.
    assert sorted(s.labels["domain"] for s in info) == sorted(status) == [BAD, BLOG, SHOP]
    assert value(samples, "reconciler_site_info", domain=BAD, server="local", sync="Invalid") == 1


def test_events_stream_live_log_and_rollback(web: Web) -> None:
    gate = web.tmp / "gate"
    web.declare(SHOP, script="echo plain-build\n")
    web.start()
    first_commit = head(web.app)
    first = web.live(first_commit)

    # -- /api/events: a snapshot on connect, then a new one when a new commit is live ----------------
    events = web.stream("/api/events")
    assert events.status == 200 and events.content_type.startswith("text/event-stream")
    name, data = events.until(lambda e: True, 15, "the first snapshot")
    assert name == "snapshot"
    snapshot = json.loads(data)
    assert set(snapshot) == {"sites", "deployments"}
    assert [view["domain"] for view in snapshot["sites"]] == [SHOP]
    assert set(snapshot["sites"][0]) == STATUS_KEYS
    assert snapshot["sites"][0]["active_commit"] == first_commit
    assert all(set(row) == HISTORY_KEYS for row in snapshot["deployments"][SHOP])

    second_commit = app_commit(web.app, "v2")

    def shows_second(event: tuple[str, str]) -> bool:
        if event[0] != "snapshot":
            return False
        shot = json.loads(event[1])
        view = shot["sites"][0]
        rows = shot["deployments"][SHOP]
        return bool(view["active_commit"] == second_commit and view["sync"] == "Synced"
                    and rows and rows[0]["commit_sha"] == second_commit and rows[0]["is_active"])

    events.until(shows_second, DEPLOY_TIMEOUT, f"a snapshot with {second_commit[:12]} active (same connection)")
    second = web.live(second_commit)
    assert second != first

    # -- a running deployment's log streams as it is written ---------------------------------------
    # The script prints, then waits for a gate file that the test creates only once the first line
    # has arrived through the stream: the stream must deliver output before the deployment ends.
    # Its first line is not UTF-8 (b"caf\xe9 latin-1", as old tools print): the stream must still
    # be exactly the log, byte offsets and all.
    known = {row["id"] for row in web.api_history()}
    web.declare(SHOP, script=("echo Y2Fm6SBsYXRpbi0xCg== | base64 -d\n"
                              "echo first-output\n"
                              f"timeout 60 sh -c 'until [ -e {gate} ]; do sleep 0.1; done'\n"
                              "echo second-output\n"))

    def running() -> dict[str, Any] | None:
        return next((row for row in web.api_history() if row["id"] not in known
                     and row["status"] in ("pending", "updating")), None)

    deployment = wait_until(running, DEPLOY_TIMEOUT, "the new deployment to start", web.diagnostics)
    log = web.stream(f"/api/sites/{SHOP}/deployments/{deployment['id']}/log")
    assert log.status == 200
    log.until(lambda e: e[0] == "log" and "first-output" in "".join(json.loads(d) for n, d in log.received
                                                                    if n == "log"),
              DEPLOY_TIMEOUT, "the first echo of the running deployment")
    so_far = "".join(json.loads(d) for _, d in log.received)
    assert "second-output" not in so_far, so_far
    assert all(name == "log" for name, _ in log.received), log.received
    gate.touch()
    received = log.rest(DEPLOY_TIMEOUT, "the end of the deployment's log")
    assert received[-1][0] == "end", received
    streamed = "".join(json.loads(d) for n, d in received if n == "log")
    assert streamed.index("first-output") < streamed.index("second-output"), streamed
    server_log = Path(deployment["log_file_path"]).read_bytes().decode(errors="replace")
    third = wait_until(lambda: web.site().live_commit() == second_commit and web.site().active() not in (first, second)
                       and web.site().active(), DEPLOY_TIMEOUT, "the gated release to go live", web.diagnostics)
    assert third

    # -- rollback: a commit on the declarations branch, applied by the daemon ----------------------
    url = f"{web.root}/api/sites/{SHOP}/rollback"
    decl_head = head(web.decl)
    status, body = http_request(url, json_body={"release": first})
    assert status == 401 and "error" in body, (status, body)
    status, body = http_request(url, json_body={"release": first}, headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "error" in body, (status, body)
    status, body = http_request(url, json_body={"release": first}, headers={"Authorization": TOKEN})  # no scheme
    assert status == 401, (status, body)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = http_request(url, json_body={"release": "01012020-000000"}, headers=auth)  # not on the server
    assert status == 409 and "error" in body, (status, body)
    status, body = http_request(url, json_body={"release": "not-a-release"}, headers=auth)
    assert status == 409 and "error" in body, (status, body)
    assert head(web.decl) == decl_head, "a refused rollback committed something"

    status, body = http_request(url, json_body={"release": first}, headers=auth)
    assert status == 200, (status, body)
    assert body["domain"] == SHOP and body["release"] == first
    assert head(web.decl) == body["commit"] != decl_head
    message = git(web.decl, "log", "-1", "--format=%s", "main")
    assert SHOP in message and first in message, message
    declared = git(web.decl, "show", f"main:sites.d/{SHOP}.toml")
    assert f'pin = "{first}"' in declared, declared

    wait_until(lambda: web.site().active() == first, DEPLOY_TIMEOUT, f"the site symlink to switch to {first}",
               web.diagnostics)
    wait_until(lambda: web.api_sites()[SHOP]["pinned"] == first and web.api_sites()[SHOP]["active_release"] == first,
               DEPLOY_TIMEOUT, "the API to show the pin", web.diagnostics)
    events.until(lambda e: e[0] == "snapshot" and json.loads(e[1])["sites"][0]["active_release"] == first,
                 DEPLOY_TIMEOUT, "a snapshot showing the rollback")
    assert web.site().commit_of(first) == first_commit

    # Last (it fails today): what streamed while the deployment ran is exactly its deployment.log.
    assert "caf\ufffd latin-1" in streamed, streamed
    assert streamed == server_log, f"streamed:\n{streamed}\n--- deployment.log:\n{server_log}"


def test_reads_need_the_token_off_loopback(web: Web) -> None:
    """Listening on every address: the same rules as on loopback (tests/hostile/test_web_auth.py),
    and the loopback names are still this endpoint's (a wildcard address answers on loopback)."""
    web.start(host="0.0.0.0")
    for path in ("/api/sites", "/metrics", f"/api/sites/{SHOP}/deployments"):
        status, body = web.get(path, auth=False)
        assert status == 401, (path, status, body)
        status, body = web.get(path, headers={"Authorization": "Bearer wrong"})
        assert status == 401, (path, status, body)
    status, body = web.get("/api/sites")
    assert status == 200 and body == [], (status, body)
    status, _ = web.get("/api/sites", method="HEAD")
    assert status == 200
    status, _ = web.get("/metrics")
    assert status == 200
    events = web.stream("/api/events", auth=False)
    assert events.status == 401
    events = web.stream("/api/events")
    assert events.status == 200
    assert events.until(lambda e: True, 15, "a snapshot")[0] == "snapshot"
    # The webhook authenticates by its signature, not the bearer token.
    body_bytes = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"}}).encode()
    status, body = web.get("/hooks/git", auth=False, data=body_bytes, headers=github_headers(body_bytes))
    assert status == 202 and body == {"sites": []}, (status, body)
    # HEAD is a read too (aiohttp answers it with the GET handler): no handler may run without the token.
    for path in ("/api/sites", "/metrics", "/api/events"):
        status, body = web.get(path, auth=False, method="HEAD")
        assert status == 401, (path, "HEAD", status, body)


# --- /hooks/git ----------------------------------------------------------------------------------


def github_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={digest}"}


def gitea_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Gitea-Event": "push", "X-Gitea-Signature": digest}


def gitlab_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": secret}


def test_git_webhook_triggers_only_the_matching_sites(web: Web) -> None:
    other = make_app_repo(web.tmp / "other-app")
    web.declare(SHOP, script="echo shop\n")
    web.declare(BLOG, repository=other, script="echo blog\n")
    # The first pass is at start; after that only a hook can trigger one. GitLab's clear-text
    # token is opted in (without it: tests/hostile/test_webhook_replay.py).
    web.start(interval=3600, webhook_gitlab_token=True)
    web.live(head(web.app), SHOP)
    blog_commit = head(other)
    web.live(blog_commit, BLOG)
    hook = f"{web.root}/hooks/git"

    def passes() -> float:
        return value(scrape(web), "reconciler_pass_duration_seconds_count")

    def deployments() -> int:
        return len(web.api_history(SHOP)) + len(web.api_history(BLOG))

    settled = wait_until(lambda: passes() or None, 15, "the first pass to be counted", web.diagnostics)
    count = deployments()

    new = app_commit(web.app, "v2")
    push = json.dumps({"ref": "refs/heads/main", "after": new,
                       "repository": {"clone_url": str(web.app), "full_name": "acme/shop"}}).encode()
    status, body = http_request(hook, data=push, headers=github_headers(push, "not-the-secret"))
    assert status == 401, (status, body)
    status, body = http_request(hook, data=push, headers={"Content-Type": "application/json"})
    assert status == 401, (status, body)
    status, body = http_request(hook, data=push, headers={**github_headers(push), "X-Hub-Signature-256": "sha256="})
    assert status == 401, (status, body)
    tampered = push.replace(b"acme/shop", b"acme/shoq")
    status, body = http_request(hook, data=tampered, headers=github_headers(push))
    assert status == 401, (status, body)
    unknown = json.dumps({"repository": {"clone_url": "https://example.com/nobody/nothing.git"}}).encode()
    status, body = http_request(hook, data=unknown, headers=github_headers(unknown))
    assert status == 202 and body == {"sites": []}, (status, body)
    # None of these may have started a pass: give the daemon time to (wrongly) react, then look.
    assert holds_for(lambda: passes() == settled and deployments() == count, 3), \
        "a refused or unmatched hook triggered a pass"
    assert web.site(SHOP).live_commit() != new

    # GitHub: HMAC-SHA256 of the body in X-Hub-Signature-256.
    status, body = http_request(hook, data=push, headers=github_headers(push))
    assert status == 202 and body == {"sites": [SHOP]}, (status, body)
    web.live(new, SHOP)
    assert web.site(BLOG).live_commit() == blog_commit

    # Gitea/Forgejo: the bare hex digest in X-Gitea-Signature; the ssh URL may be what matches.
    newer = app_commit(web.app, "v3")
    gitea = json.dumps({"ref": "refs/heads/main", "after": newer,
                        "repository": {"ssh_url": str(web.app) + "/", "clone_url": "https://gitea.example/acme/shop"}})
    status, body = http_request(hook, data=gitea.encode(), headers=gitea_headers(gitea.encode()))
    assert status == 202 and body == {"sites": [SHOP]}, (status, body)
    web.live(newer, SHOP)
    status, body = http_request(hook, data=gitea.encode(), headers=gitea_headers(gitea.encode(), "wrong"))
    assert status == 401, (status, body)

    # GitLab: the secret itself in X-Gitlab-Token; the repository is under "project".
    blog_new = app_commit(other, "blog v2")
    gitlab = json.dumps({"object_kind": "push", "after": blog_new,
                         "project": {"git_http_url": str(other), "path_with_namespace": "acme/blog"}}).encode()
    status, body = http_request(hook, data=gitlab, headers=gitlab_headers(gitlab, "wrong"))
    assert status == 401, (status, body)
    status, body = http_request(hook, data=gitlab, headers=gitlab_headers(gitlab))
    assert status == 202 and body == {"sites": [BLOG]}, (status, body)
    web.live(blog_new, BLOG)
    assert web.site(SHOP).live_commit() == newer
