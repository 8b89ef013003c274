"""`[[notify]]` delivery in every form, to a LOCAL sink only: an aiohttp server on 127.0.0.1,
started by the test on a thread of its own, records every request.

* plain http(s) URLs get the JSON event (every field, `text` among them);
* apprise URLs get the one-line `text`: `json://127.0.0.1:PORT/path` (apprise's generic JSON)
  and `mmost://127.0.0.1:PORT/TOKEN` (Mattermost's incoming webhook, POST /hooks/TOKEN with
  {"text": ...}), a chat service whose host apprise lets us choose. Slack and Discord URLs have
  no host to point elsewhere, so they are only checked for loading (tests/service/test_announce.py).

Unit tests drive reconciler.service.webhooks.Notifications with a tiny first retry delay; one
end-to-end test runs the REAL daemon (local transport) through a deploy and a failed build.
No traffic leaves 127.0.0.1; every wait is bounded polling; nothing asserts on durations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import NotifyEvent, NotifyTarget
from reconciler.service import webhooks
from reconciler.service.announce import FIELDS, Scene, fields
from reconciler.service.webhooks import ATTEMPTS, Notifications
from tests.support import Daemons, World, app_commit, free_port, git, wait_until
from tests.support.receiver import Receiver, receiving

SHOP = "shop.example.com"
OTHER_SITE = "broken.example.com"
TOKEN = "tok3n0nlyinthepath"  # a Mattermost webhook token: it must never reach a log line
PROMPT = 20.0


@pytest.fixture(name="sink")
def sink_fixture() -> Iterator[Receiver]:
    with receiving() as receiver:
        yield receiver


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """apprise speaks through requests, which honours proxy variables: 127.0.0.1 stays direct."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


async def _until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}", pytrace=False)
        await asyncio.sleep(0.01)
    return value


LIVE = {"id": 7, "release": "31072025-143022", "commit_sha": "a" * 40, "status": "success",
        "commit_subject": "Old checkout", "commit_author": "Jane Doe <jane@example.com>", "duration_ms": 4000}
BROKEN = {"id": 9, "release": "01082025-091245", "commit_sha": "b" * 40, "status": "failed",
          "commit_subject": "Break the checkout", "commit_author": "Max Mustermann <max@example.com>",
          "duration_ms": 2500, "exit_status": 3, "trigger": "app commit",
          "message": "deploy script failed (exit 3) at: php artisan migrate"}
SCENE = Scene(SHOP, "web-1", "Failed", "Healthy", "deploy script failed (exit 3)", LIVE["release"],
              LIVE["commit_sha"], live=LIVE, endpoint="http://127.0.0.1:9180")


def _emit_failed(notes: Notifications) -> None:
    notes.emit("failed", SHOP, **fields("failed", SCENE, BROKEN, BROKEN["commit_sha"]))


# --- delivery: retries, giving up, each target its events once -----------------------------------


async def _settle(seconds: float = 0.3) -> None:
    """Let any (wrong) further attempt happen: many times the retry delay used here."""
    await asyncio.sleep(seconds)


def test_retries_until_delivered(sink: Receiver) -> None:
    sink.script["/hook"] = [500, 500]

    async def main() -> None:
        notes = Notifications([NotifyTarget(url=sink.root + "/hook")], first_delay=0.01)
        try:
            notes.emit("deployed", SHOP, release="01012025-000000", commit="abc")
            await _until(lambda: sink.at("/hook"), 10, "the delivery")
            await _settle()
        finally:
            await notes.close()

    asyncio.run(main())
    attempts = sink.at("/hook", delivered=False)
    assert [p.answered for p in attempts] == [500, 500, 200]
    assert all(p.body == attempts[0].body for p in attempts), "every attempt carries the same event"
    body = attempts[0].body
    assert (body["event"], body["domain"], body["release"], body["commit"]) == ("deployed", SHOP, "01012025-000000",
                                                                               "abc")
    assert body["at"].endswith("Z")


def test_gives_up_after_the_last_attempt(sink: Receiver) -> None:
    sink.script["/hook"] = [503] * (ATTEMPTS + 5)

    async def main() -> None:
        notes = Notifications([NotifyTarget(url=sink.root + "/hook")], first_delay=0.01)
        try:
            notes.emit("failed", SHOP, message="boom")
            await _until(lambda: len(sink.at("/hook", delivered=False)) >= ATTEMPTS, 10, "every attempt")
            await _settle(1.0)
        finally:
            await notes.close()

    asyncio.run(main())
    assert len(sink.at("/hook", delivered=False)) == ATTEMPTS
    assert not sink.at("/hook")


def test_targets_get_only_their_events(sink: Receiver) -> None:
    """Every event emitted goes to every target that wants it (once-only is decided before:
    tests/service/test_herald.py); a target that cannot be reached holds up nobody."""
    async def main() -> None:
        notes = Notifications([NotifyTarget(url=sink.root + "/all"),
                               NotifyTarget(url=sink.root + "/failed", events=["failed"]),
                               NotifyTarget(url="http://127.0.0.1:9/unreachable")], first_delay=0.01)
        try:
            assert notes.wanted(NotifyEvent.FAILED) and notes.wanted(NotifyEvent.UNREACHABLE)
            notes.emit("deployed", SHOP)
            notes.emit("deployed", OTHER_SITE)
            notes.emit("failed", SHOP, message="exit 3")
            notes.emit("rolled_back", SHOP, release="01012025-000000")
            notes.emit("unreachable", None, server="web-1", message="web-1: cannot connect")
            await _until(lambda: len(sink.at("/all")) >= 5 and sink.at("/failed"), 10, "the deliveries")
            await _settle()
        finally:
            await notes.close()

    asyncio.run(main())
    events = sorted((p.body["event"], p.body["domain"] or "") for p in sink.at("/all"))
    assert events == [("deployed", OTHER_SITE), ("deployed", SHOP), ("failed", SHOP), ("rolled_back", SHOP),
                      ("unreachable", "")]
    assert [(p.body["event"], p.body["message"]) for p in sink.at("/failed")] == [("failed", "exit 3")]
    assert len(sink.posts) == 6, sink.posts


def test_a_drain_waits_for_the_deliveries_under_way(sink: Receiver) -> None:
    """A CLI run's end: `drain` returns once what was emitted is delivered, retries included."""
    sink.script["/later"] = [503]

    async def main() -> None:
        notes = Notifications([NotifyTarget(url=sink.root + "/later")], first_delay=0.01)
        notes.emit("deployed", SHOP)
        await notes.drain(timeout=20)

    asyncio.run(main())
    assert len(sink.at("/later")) == 1 and len(sink.at("/later", delivered=False)) == 2


# --- the forms ---------------------------------------------------------------------------------


def test_every_form_carries_the_one_line_summary(sink: Receiver) -> None:
    targets = [NotifyTarget(url=f"{sink.root}/plain"),
               NotifyTarget(url=f"json://127.0.0.1:{sink.port}/apprise-json"),
               NotifyTarget(url=f"mmost://127.0.0.1:{sink.port}/{TOKEN}")]

    async def main() -> None:
        notes = Notifications(targets, first_delay=0.01)
        try:
            _emit_failed(notes)
            await _until(lambda: all(sink.at(p) for p in ("/plain", "/apprise-json", f"/hooks/{TOKEN}")), 20,
                         "a delivery at every target")
        finally:
            await notes.close()

    asyncio.run(main())
    plain = sink.at("/plain")[0]
    assert plain.content_type == "application/json"
    assert list(plain.body) == list(FIELDS)
    text = plain.body["text"]
    # The failed build in release/commit, the live one apart: never the live release with the failed commit.
    assert (plain.body["release"], plain.body["commit"]) == (BROKEN["release"], BROKEN["commit_sha"])
    assert (plain.body["live_release"], plain.body["live_commit"]) == (LIVE["release"], LIVE["commit_sha"])
    assert text == (f'{SHOP} FAILED on web-1: {BROKEN["release"]} ({"b" * 12}) "Break the checkout" by Max '
                    "Mustermann, after 2.5 s (app commit): deploy script failed (exit 3) at: php artisan migrate. "
                    f'Live: {LIVE["release"]} ({"a" * 12}). Dashboard: http://127.0.0.1:9180/')

    generic = sink.at("/apprise-json")[0]
    assert generic.content_type == "application/json"
    assert generic.body["message"] == text and generic.body["type"] == "failure", generic.body

    chat = sink.at(f"/hooks/{TOKEN}")[0]
    assert chat.body["text"] == text, chat.body
    assert chat.body["username"] == "reconciler"
    assert len(sink.posts) == 3, sink.posts


def test_the_notify_type_follows_the_event(sink: Receiver) -> None:
    async def main() -> None:
        notes = Notifications([NotifyTarget(url=f"json://127.0.0.1:{sink.port}/kinds")], first_delay=0.01)
        try:
            for event in ("deployed", "rolled_back", "degraded"):
                notes.emit(event, SHOP, **fields(event, SCENE))
            notes.emit("unreachable", None, server="web-1", message="web-1: cannot connect")
            notes.emit("recovered", None, server="web-2", message="reachable again")
            await _until(lambda: len(sink.at("/kinds")) >= 5, 20, "five deliveries")
        finally:
            await notes.close()

    asyncio.run(main())
    kinds = {" ".join(h.body["message"].split(" ")[1:3]): h.body["type"] for h in sink.at("/kinds")}
    assert kinds == {"deployed on": "success", "rolled back": "info", "DEGRADED on": "warning",
                     "web-1 UNREACHABLE:": "failure", "web-2 reachable": "success"}, kinds


def test_apprise_deliveries_are_retried_with_backoff(sink: Receiver) -> None:
    sink.script[f"/hooks/{TOKEN}"] = [500, 503]

    async def main() -> None:
        notes = Notifications([NotifyTarget(url=f"mmost://127.0.0.1:{sink.port}/{TOKEN}")], first_delay=0.01)
        try:
            _emit_failed(notes)
            await _until(lambda: sink.at(f"/hooks/{TOKEN}"), 20, "the delivery")
            await asyncio.sleep(0.3)  # room for a (wrong) further attempt
        finally:
            await notes.close()

    asyncio.run(main())
    attempts = sink.at(f"/hooks/{TOKEN}", delivered=False)
    assert [h.answered for h in attempts] == [500, 503, 200]
    assert all(h.body == attempts[0].body for h in attempts)


def test_logs_name_targets_without_their_secrets(sink: Receiver) -> None:
    refused = free_port()  # nothing listens there
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger(webhooks.__name__)
    handler = Keep(logging.WARNING)
    logger.addHandler(handler)
    targets = [NotifyTarget(url=f"mmost://127.0.0.1:{refused}/{TOKEN}"),
               NotifyTarget(url=f"http://user:pw-{TOKEN}@127.0.0.1:{refused}/hooks/{TOKEN}?key={TOKEN}")]

    async def main() -> None:
        notes = Notifications(targets, first_delay=0.01)
        try:
            _emit_failed(notes)
            await _until(lambda: len(records) >= 2, 30, "both targets giving up")
        finally:
            await notes.close()

    try:
        asyncio.run(main())
    finally:
        logger.removeHandler(handler)
    lines = sorted(r.getMessage() for r in records)
    assert all(TOKEN not in line for line in lines), lines
    assert lines[0].startswith(f"notify #1 (mmost://): giving up on failed for {SHOP} after {ATTEMPTS} attempts"), lines
    assert lines[1].startswith(f"notify #2 (http://127.0.0.1:{refused}): giving up"), lines


def test_chat_deliveries_never_take_asyncios_default_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """apprise blocks; the declarations loader runs on asyncio's default executor. However many
    chat deliveries hang, a to_thread call still gets a thread at once."""
    gate = threading.Event()
    threads: set[str] = set()

    def hanging(url: str, text: str, event: str) -> bool:
        threads.add(threading.current_thread().name)
        gate.wait(30)
        return True

    monkeypatch.setattr(webhooks, "send_chat", hanging)

    async def main() -> str:
        notes = Notifications([NotifyTarget(url="json://127.0.0.1:9/never")], first_delay=0.01)
        try:
            for number in range(64):
                notes.emit("rolled_back", f"site{number}.example.com", release="01082025-091245")
            await _until(lambda: threads, 10, "a delivery under way")
            answer = await asyncio.wait_for(asyncio.to_thread(lambda: "a thread was free"), 10)
        finally:
            gate.set()
            await notes.close()
        return answer

    assert asyncio.run(main()) == "a thread was free"
    assert threads and all(name.startswith("notify") for name in threads), threads


# --- end to end: the daemon --------------------------------------------------------------------


def test_daemon_failed_event_names_the_failed_build_in_every_form(tmp_path: Path, sink: Receiver,
                                                                  daemons: Daemons) -> None:
    world = World.create(tmp_path, daemons=daemons, domain=SHOP, interval=1)
    app = world.app
    world.declare(SHOP, script="test ! -e broken\n")
    with world.config.open("a") as handle:
        handle.write(f'\n[[notify]]\nurl = "{sink.root}/plain"\n'
                     f'\n[[notify]]\nurl = "json://127.0.0.1:{sink.port}/apprise-json"\n'
                     f'\n[[notify]]\nurl = "mmost://127.0.0.1:{sink.port}/{TOKEN}"\n')
    run = world.launcher
    daemon = run.start()

    def events(name: str) -> Callable[[], list[Any]]:
        def check() -> list[Any]:
            assert daemon.alive(), "the daemon exited"
            return [h.body for h in sink.at("/plain") if h.body["event"] == name]
        return check

    good = git(app, "rev-parse", "HEAD")
    deployed = wait_until(events("deployed"), PROMPT, "`deployed` at the plain webhook",
                          run.diagnostics)[0]
    live = world.active(SHOP)
    assert (deployed["release"], deployed["commit"], deployed["commit_subject"]) == (live, good, "v1")

    bad = app_commit(app, "break the build", files={"broken": "yes\n"})
    failed = wait_until(events("failed"), PROMPT, "`failed` at the plain webhook", run.diagnostics)[0]
    row = next(h for h in run.history(SHOP) if h["status"] == "failed")
    assert (failed["release"], failed["commit"], failed["deployment_id"]) == (row["release"], bad, row["id"])
    assert failed["commit_subject"] == "break the build" and failed["exit_status"] == 1, failed
    assert (failed["live_release"], failed["live_commit"]) == (live, good), "the live release, untouched"
    assert world.active(SHOP) == live and failed["release"] != live
    text = failed["text"]
    assert text.startswith(f'{SHOP} FAILED on local: {row["release"]} ({bad[:12]}) "break the build" by '
                           f"{os.environ['GIT_AUTHOR_NAME']}, after "), text
    assert text.endswith(f"Live: {live} ({good[:12]})"), text

    generic = wait_until(lambda: [h.body for h in sink.at("/apprise-json") if h.body["message"] == text], PROMPT,
                         "the same line at json://", run.diagnostics)[0]
    assert generic["type"] == "failure"
    wait_until(lambda: [h for h in sink.at(f"/hooks/{TOKEN}") if h.body["text"] == text], PROMPT,
               "the same line at mmost://", run.diagnostics)
    assert TOKEN not in daemon.tail()
