"""A site's decrypted environment is written to shared/.env and nowhere else: a planted secret
value appears in no command line sent to the server (it rides on stdin), no log (the daemon's
own, every logger at DEBUG, the releases' deployment.log), no notification payload, no byte of
the state database or of anything else under state_dir, no answer of the HTTP API or the
dashboard, and no output of status, history or logs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from tests.support import Daemons, World, client, free_port
from tests.support.age_keys import AgeKey, age_key, seal, write_recipients
from tests.support.receiver import Receiver, receiving
from tests.support.sshd import SshServer

SECRET = "PLANTED-env-secret-9c41d7"
SECOND = "PLANTED-second-secret-77ab02"
TOKEN = "env-leak-api-token"


def _env(secret: str) -> str:
    return f"APP_NAME=shop\nDB_PASSWORD={secret}\n"


def _world(tmp_path: Path, server: SshServer, daemons: Daemons | None = None,
           **config: object) -> tuple[World, AgeKey]:
    key = age_key(tmp_path / "age.key")
    world = World.create(tmp_path, server, daemons=daemons, age_identity_file=str(key.identity_file), **config)
    write_recipients(world.decl, key.public)
    seal(world.decl, world.domain, _env(SECRET), key.public)
    world.declare(script="grep -c DB_PASSWORD .env\necho built\n", reload="echo reloaded\n")
    return world, key


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def _leaks(blob: bytes | str, *secrets: str) -> list[str]:
    data = blob.encode(errors="replace") if isinstance(blob, str) else blob
    return [s for s in secrets if s.encode() in data]


def test_env_content_is_never_in_a_command_line(tmp_path: Path, sshd_session: SshServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """Every command text sent over SSH (what the server's sh gets as argv) is recorded through a
    first deploy and an env change: the secret is only ever on a command's stdin, and no logger,
    at DEBUG, ever prints it."""
    world, key = _world(tmp_path, sshd_session)
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    stdins: list[str] = []

    async def go() -> None:
        settings = world.settings(age_identity_file=key.identity_file)
        reconciler = Reconciler(settings, Store(settings.db_path))
        transport = reconciler.pool.get(world.server_name)
        run = transport.run

        async def recording(command: str, **kwargs: object) -> object:
            texts.append(command)
            stdins.append(str(kwargs.get("stdin") or ""))
            return await run(command, **kwargs)  # type: ignore[arg-type]

        transport.run = recording  # type: ignore[method-assign]
        try:
            outcomes = await reconciler.run_pass()
            assert [o.sync for o in outcomes] == ["Synced"], outcomes
            seal(world.decl, world.domain, _env(SECOND), key.public)
            outcomes = await reconciler.run_pass()
            assert [o.sync for o in outcomes] == ["Synced"], outcomes
        finally:
            await reconciler.close()
            reconciler.store.close()

    world.state.mkdir(exist_ok=True)
    asyncio.run(go())
    assert (world.deployments() / "shared" / ".env").read_text() == _env(SECOND)
    assert any(SECRET in s for s in stdins) and any(SECOND in s for s in stdins), "the recording saw the writes"
    assert [t for t in texts if _leaks(t, SECRET, SECOND)] == []
    assert _leaks(caplog.text, SECRET, SECOND) == []
    assert "env drift" in caplog.text, "the change is logged, by digest"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as serving:
        yield serving


def test_env_content_reaches_no_log_database_notification_api_or_output(
        tmp_path: Path, sshd_session: SshServer, daemons: Daemons, receiver: Receiver) -> None:
    """The daemon deploys the site with its env, then applies a new env commit; afterwards the
    daemon's log, every file under state_dir (the SQLite file and its journal included), the
    releases' deployment.log, every notification, the API and dashboard answers and the CLI's
    status/history/logs output are searched for both secrets."""
    port = free_port()
    world, key = _world(tmp_path, sshd_session, daemons, interval=1, listen=f"127.0.0.1:{port}", api_token=TOKEN)
    with world.config.open("a") as handle:
        handle.write(f'\n[[notify]]\nurl = "{receiver.root}/all"\n')
    shared = world.deployments() / "shared" / ".env"
    log = tmp_path / "daemon.log"
    daemon = world.start_daemon(log=log)
    world.wait(lambda: shared.is_file() and shared.read_text() == _env(SECRET) and world.active(), "first deploy")
    world.wait(lambda: receiver.at("/all", "deployed", world.domain), "the deployed notification")
    seal(world.decl, world.domain, _env(SECOND), key.public)
    world.wait(lambda: shared.read_text() == _env(SECOND), "the new env applied")
    root = f"http://127.0.0.1:{port}"
    answers = [client.call(f"{root}{path}", token=TOKEN).text
               for path in ("/", "/api/sites", f"/api/sites/{world.domain}/deployments", "/metrics")]
    rows = client.call(f"{root}/api/sites/{world.domain}/deployments", token=TOKEN).json()
    answers += [client.call(f"{root}/api/sites/{world.domain}/deployments/{row['id']}/log", token=TOKEN).text
                for row in rows]
    daemon.stop()

    assert _leaks(log.read_bytes(), SECRET, SECOND) == [], "the daemon's log"
    for file in _files_under(world.state):
        assert _leaks(file.read_bytes(), SECRET, SECOND) == [], file
    for file in world.deployments().rglob("*"):
        if file.is_file() and not file.is_symlink() and file != shared:
            assert _leaks(file.read_bytes(), SECRET, SECOND) == [], file
    posts = receiver.at("/all")
    assert posts and all(_leaks(repr(post.body), SECRET, SECOND) == [] for post in posts)
    assert all(_leaks(answer, SECRET, SECOND) == [] for answer in answers)
    for args in (("status", "--json"), ("history", world.domain, "--json"), ("logs", world.domain)):
        rc, out, err = world.run_cli(*args)
        assert rc == 0 and _leaks(out + err, SECRET, SECOND) == [], args
