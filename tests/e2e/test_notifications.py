"""`[[notify]]` webhooks: JSON POSTs of deployed / failed / rolled_back / degraded, every field
(reconciler.service.announce.FIELDS) in every event, `text` among them.

End to end against the REAL daemon process (local transport) with receivers on 127.0.0.1
(http.server on a thread) recording every POST, plus two targets that never answer: one
refuses connections, one accepts and then stays silent. The retry and filtering rules of
reconciler.service.webhooks.Notifications are unit-tested in tests/service/test_webhooks.py.
Every wait is bounded polling; nothing asserts on durations.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.service.announce import FIELDS, neutral
from tests.support import Daemons, World, app_commit, client, free_port, git, make_app_repo, wait_until
from tests.support.receiver import Post, Receiver, receiving
from tests.support.sshd import SshServer

SHOP = "shop.example.com"
BROKEN = "broken.example.com"
DEPLOY_TIMEOUT = 30.0
# A notification that blocked the reconciler on the silent target would hold it for the client's
# 10 s timeout per attempt, ATTEMPTS times; deploys must show up well within that.
PROMPT = 20.0
TOKEN = "notify-test-token"  # every read of the HTTP endpoint needs it, /metrics included


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as serving:
        yield serving


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


# --- end to end: the daemon --------------------------------------------------------------------


def test_daemon_notifies_once_per_event(tmp_path: Path, receiver: Receiver, silent_port: int,
                                        daemons: Daemons) -> None:
    port = free_port()
    refused = free_port()  # nothing listens there
    world = World.create(tmp_path, daemons=daemons, domain=SHOP, interval=1, listen=f"127.0.0.1:{port}",
                         api_token=TOKEN)
    app = world.app
    other = make_app_repo(tmp_path / "other")
    world.declare(SHOP, script="echo shop\n")
    world.declare(BROKEN, repository=other, script="echo about-to-fail\nexit 3\n")
    with world.config.open("a") as handle:
        handle.write(f'\n[[notify]]\nurl = "http://127.0.0.1:{silent_port}/silent"\n'
                     f'\n[[notify]]\nurl = "http://127.0.0.1:{refused}/refused"\n'
                     f'\n[[notify]]\nurl = "{receiver.root}/all"\n'
                     f'\n[[notify]]\nurl = "{receiver.root}/failed-only"\nevents = ["failed"]\n')
    run = world.launcher
    shop = world.on_disk(SHOP)
    daemon = run.start()

    def arrived(path: str, event: str, domain: str, count: int = 1) -> Callable[[], list[Post]]:
        def check() -> list[Post]:
            assert daemon.alive(), "the daemon exited"
            posts = receiver.at(path, event, domain)
            return posts if len(posts) >= count else []
        return check

    first_commit = git(app, "rev-parse", "HEAD")
    deployed = wait_until(arrived("/all", "deployed", SHOP), PROMPT, "`deployed` for the first commit",
                          run.diagnostics)[0]
    first = shop.active()
    assert deployed.body["commit"] == first_commit and deployed.body["release"] == first
    assert deployed.body["sync"] == "Synced" and deployed.body["server"] == "local"
    assert list(deployed.body) == list(FIELDS), deployed.body  # every key, always, in one order
    assert deployed.body["live_release"] == first and deployed.body["live_commit"] == first_commit
    assert deployed.body["previous_release"] is None  # nothing was live before
    assert deployed.body["commit_subject"] == "v1" and os.environ["GIT_AUTHOR_NAME"] in deployed.body["commit_author"]
    assert isinstance(deployed.body["deployment_id"], int) and isinstance(deployed.body["duration_ms"], int)
    assert deployed.body["dashboard_url"] == f"http://127.0.0.1:{port}/"
    assert deployed.body["log_url"] == (f"http://127.0.0.1:{port}/api/sites/{SHOP}/deployments/"
                                        f"{deployed.body['deployment_id']}/log")
    assert deployed.body["text"].startswith(f"{SHOP} deployed on local: {first} ({first_commit[:12]}) \"v1\""), \
        deployed.body["text"]
    failed = wait_until(arrived("/all", "failed", BROKEN), PROMPT, "`failed` for the failing script",
                        run.diagnostics)[0]
    assert failed.body["sync"] == "Failed" and "exit 3" in failed.body["message"], failed.body
    # The failed build, not the live release: BROKEN never went live, its failed release is on disk.
    assert failed.body["commit"] == git(other, "rev-parse", "HEAD") and failed.body["live_release"] is None
    assert failed.body["release"] in world.releases(BROKEN) and failed.body["exit_status"] == 3, failed.body
    assert "exit 3" in failed.body["text"] and failed.body["text"].endswith(f"Live: nothing. Dashboard: "
                                                                           f"http://127.0.0.1:{port}/"), failed.body
    wait_until(arrived("/failed-only", "failed", BROKEN), PROMPT, "`failed` at the failed-only target")

    # A new commit: deployed promptly (the silent target holds nothing up), notified once.
    second_commit = app_commit(app, "v2")
    again = wait_until(arrived("/all", "deployed", SHOP, 2), PROMPT, "`deployed` for the second commit",
                       run.diagnostics)[1]
    assert shop.live_commit() == second_commit
    second = shop.active()
    assert (again.body["previous_release"], again.body["previous_commit"]) == (first, first_commit), again.body
    assert (again.body["release"], again.body["commit"]) == (second, second_commit)
    assert f"{first} ({first_commit[:12]}) → {second} ({second_commit[:12]}) \"v2\"" in again.body["text"]

    # Several later passes change nothing: no new notification of anything.
    def passes() -> float:
        return client.passes(f"http://127.0.0.1:{port}", TOKEN)

    seen = passes()
    wait_until(lambda: passes() >= seen + 3, 30, "three more passes", run.diagnostics)
    assert [p.body["commit"] for p in receiver.at("/all", "deployed", SHOP)] == [first_commit, second_commit]
    assert {p.body["event"] for p in receiver.at("/all")} == {"deployed", "failed"}
    assert {p.body["event"] for p in receiver.at("/failed-only")} == {"failed"}

    # A rollback (pin) is announced once the daemon applied it.
    done = run.cli("rollback", SHOP, first)
    assert done.returncode == 0, done.stdout + done.stderr
    rolled = wait_until(arrived("/all", "rolled_back", SHOP), PROMPT, "`rolled_back`", run.diagnostics)[0]
    assert rolled.body["release"] == first and rolled.body["commit"] == first_commit, rolled.body
    assert (rolled.body["previous_release"], rolled.body["live_release"]) == (second, first), rolled.body
    assert rolled.body["text"].startswith(f"{SHOP} rolled back on local: {second}"), rolled.body["text"]
    assert shop.active() == first

    # A pin to a release that is not on the server: degraded, once.
    world.declare(BROKEN, repository=other, script="echo about-to-fail\nexit 3\n", pin="01012020-000000")
    degraded = wait_until(arrived("/all", "degraded", BROKEN), PROMPT, "`degraded`", run.diagnostics)[0]
    assert degraded.body["health"] == "Degraded" and "01012020-000000" in degraded.body["message"]
    assert "01012020-000000" in degraded.body["text"] and "DEGRADED" in degraded.body["text"]

    seen = passes()
    wait_until(lambda: passes() >= seen + 2, 30, "two more passes", run.diagnostics)
    assert len(receiver.at("/all", "rolled_back")) == 1
    assert len(receiver.at("/all", "degraded")) == 1
    assert len(receiver.at("/all", "deployed")) == 2
    assert daemon.alive()

    # Last (it fails today): one failure of one (commit, declaration) is one `failed`, however
    # many passes later remember it; at every target that wants it.
    failures = [p.body["message"] for p in receiver.at("/all", "failed", BROKEN)]
    assert len(failures) == 1, failures
    assert [p.body["event"] for p in receiver.at("/failed-only")] == ["failed"], receiver.at("/failed-only")


def test_sighup_applies_new_notify_targets(tmp_path: Path, receiver: Receiver, daemons: Daemons) -> None:
    """A `[[notify]]` target added to the config reaches the running daemon with SIGHUP."""
    world = World.create(tmp_path, daemons=daemons, domain=SHOP, interval=1)
    world.declare(SHOP, script="echo shop\n")
    daemon = world.launcher.start()
    shop = world.on_disk(SHOP)
    wait_until(lambda: shop.active(), PROMPT, "the first deploy", world.launcher.diagnostics)
    with world.config.open("a") as handle:
        handle.write(f'\n[[notify]]\nurl = "{receiver.root}/after-hup"\n')
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in daemon.tail(), PROMPT, "the reload", world.launcher.diagnostics)
    new = app_commit(world.app, "v2")
    # (The first deploy's own event may reach the new target too, if the daemon settles it after
    # the reload: what matters is that the next deploy's does.)
    wait_until(lambda: [p for p in receiver.at("/after-hup", "deployed", SHOP) if p.body["commit"] == new],
               PROMPT, "`deployed` of the new commit at the target added by SIGHUP", world.launcher.diagnostics)


# --- on-call: outages and recoveries, and the CLI's own work ----------------------------------------


def _notify_to(world: World, receiver: Receiver, path: str) -> None:
    with world.config.open("a") as handle:
        handle.write(f'\n[[notify]]\nurl = "{receiver.root}{path}"\n')


def test_a_server_outage_is_one_unreachable_and_one_recovered(tmp_path: Path, receiver: Receiver, sshd: SshServer,
                                                              daemons: Daemons) -> None:
    """The daemon reports a stopped SSH server once (`unreachable`, naming the server, no site),
    however many of its retries and CLI passes fail meanwhile, and once `recovered` when it is
    back; a CLI pass that sees the same outage sends nothing more (one memory, the state
    database)."""
    world = World.create(tmp_path, sshd, daemons=daemons, domain=SHOP, interval=1)
    world.declare(SHOP, script="echo shop\n")
    _notify_to(world, receiver, "/oncall")
    run = world.launcher
    daemon = run.start()
    wait_until(lambda: receiver.at("/oncall", "deployed", SHOP), PROMPT, "the first `deployed`", run.diagnostics)

    sshd.stop()
    down = wait_until(lambda: receiver.at("/oncall", "unreachable"), 60, "`unreachable`", run.diagnostics)[0]
    assert down.body["server"] == sshd.destination and down.body["domain"] is None, down.body
    assert down.body["text"].startswith(neutral(f"server {sshd.destination} UNREACHABLE: ")), down.body["text"]
    # The CLI sees the outage too (and says so), while the daemon retries with backoff.
    again = run.cli("reconcile")
    assert again.returncode == 1 and "Unknown" in again.stdout, again.stdout + again.stderr
    wait_until(lambda: "retrying in 10s" in (run.status()[SHOP]["message"] or ""), 60,
               "the daemon's second retry of the unreachable server", run.diagnostics)
    assert len(receiver.at("/oncall", "unreachable")) == 1, receiver.at("/oncall", "unreachable")

    sshd.start()
    up = wait_until(lambda: receiver.at("/oncall", "recovered"), 90, "`recovered`", run.diagnostics)[0]
    assert up.body["server"] == sshd.destination and up.body["domain"] is None, up.body
    # Later passes, the daemon's and the CLI's, reach the server: nothing more to say.
    assert run.cli("reconcile").returncode == 0
    seen = len(receiver.posts)
    wait_until(lambda: run.status()[SHOP]["sync"] == "Synced", PROMPT, "Synced again", run.diagnostics)
    assert [p.body["event"] for p in receiver.at("/oncall")][-2:] == ["unreachable", "recovered"], receiver.posts
    assert len(receiver.at("/oncall", "recovered")) == 1 and len(receiver.posts) == seen
    assert daemon.alive(), daemon.tail()


def test_a_cli_retry_that_deploys_sends_deployed_and_recovered(tmp_path: Path, receiver: Receiver,
                                                              sshd_session: SshServer) -> None:
    """Without a daemon, the CLI's own work notifies as the daemon's would: a `reconcile` whose
    build fails sends `failed`, a `retry` that then deploys sends `deployed` and `recovered`
    (Failed -> Synced), each once."""
    world = World.create(tmp_path, sshd_session, domain=SHOP)
    gate = tmp_path / "gate"
    world.declare(SHOP, script=f"test -f {gate} || exit 3\necho shop\n")
    _notify_to(world, receiver, "/cli")
    failing = world.run_cli_process("reconcile")
    assert failing.returncode == 1, failing.stdout + failing.stderr
    failed = wait_until(lambda: receiver.at("/cli", "failed", SHOP), PROMPT, "`failed` from the CLI")[0]
    assert failed.body["exit_status"] == 3, failed.body

    gate.touch()
    retried = world.run_cli_process("retry", SHOP)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    # The CLI waited for its deliveries before it exited: they are there already.
    deployed = receiver.at("/cli", "deployed", SHOP)
    assert len(deployed) == 1 and deployed[0].body["trigger"] == "retry", receiver.posts
    assert deployed[0].body["release"] == world.active(SHOP)
    recovered = receiver.at("/cli", "recovered", SHOP)
    assert len(recovered) == 1 and "was FAILED" in recovered[0].body["text"], receiver.posts
    assert world.run_cli_process("reconcile").returncode == 0
    assert [p.body["event"] for p in receiver.at("/cli")] == ["failed", "deployed", "recovered"]


def test_a_cli_rollback_applied_at_once_sends_rolled_back_once(tmp_path: Path, receiver: Receiver,
                                                                 sshd_session: SshServer) -> None:
    """Without a daemon, `rollback` switches in its own process and notifies as the daemon
    would: one `rolled_back` naming the release it went back to; a later pass repeats nothing."""
    world = World.create(tmp_path, sshd_session, domain=SHOP)
    world.declare(SHOP, script="echo shop\n")
    assert world.run_cli_process("reconcile").returncode == 0
    first = world.active(SHOP)
    app_commit(world.app, "v2")
    assert world.run_cli_process("reconcile").returncode == 0
    _notify_to(world, receiver, "/cli")
    rolled = world.run_cli_process("rollback", SHOP)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    assert world.active(SHOP) == first
    back = receiver.at("/cli", "rolled_back", SHOP)  # delivered before the command exited
    assert len(back) == 1 and back[0].body["release"] == first, receiver.posts
    assert world.run_cli_process("reconcile").returncode == 0
    assert [p.body["event"] for p in receiver.at("/cli")] == ["rolled_back"], receiver.posts


def test_an_app_repository_that_cannot_be_reached_is_one_unreachable_and_one_recovered(
        tmp_path: Path, receiver: Receiver) -> None:
    """Two sites deployed from one app repository, its host gone (the repository cannot be
    listed): one `unreachable` naming the repository, not the sites, however many passes and
    sites see it; once it answers again, one `recovered`. Sites on "local", the CLI alone."""
    world = World.create(tmp_path, domain=SHOP)
    world.declare(SHOP, script="echo shop\n")
    world.declare(BROKEN, script="echo blog\n", repository=f"{world.app}/")  # the same repository
    _notify_to(world, receiver, "/repo")
    assert world.run_cli_process("reconcile").returncode == 0
    away = world.app.with_name("app-away")
    world.app.rename(away)
    for _ in range(2):
        assert world.run_cli_process("reconcile").returncode == 1  # both sites Unknown
    down = receiver.at("/repo", "unreachable")
    assert len(down) == 1, receiver.posts
    assert (down[0].body["domain"], down[0].body["server"]) == (None, None), down[0].body
    assert down[0].body["repository"] in (str(world.app), f"{world.app}/"), down[0].body
    assert down[0].body["text"].startswith("repository "), down[0].body
    away.rename(world.app)
    assert world.run_cli_process("reconcile").returncode == 0
    assert world.run_cli_process("reconcile").returncode == 0
    back = receiver.at("/repo", "recovered")
    assert len(back) == 1 and back[0].body["text"].endswith("reachable again"), receiver.posts
    causes = [p.body["event"] for p in receiver.at("/repo") if p.body["domain"] is None]
    assert causes == ["unreachable", "recovered"], receiver.posts
