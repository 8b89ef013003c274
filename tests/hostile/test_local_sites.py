"""A committer to the declarations branch cannot borrow the reconciler's own keys.

A site with `server = "local"` runs its script as the reconciler user on the reconciler's host:
it could read `identity_file` (and with it ssh to servers no declaration names), `api_token`
and the state database. So a local site is refused unless reconciler.toml opts in with
`allow_local = true`: it is Invalid with a message saying so, nothing of it runs or changes, and
every other site of the same pass converges. Each script here tries to copy the reconciler's SSH
private key into a file: the copy must not appear.

The CLI and the daemon run as real processes; `RECONCILER_UNDER_TEST=<checkout>` runs another
checkout's `reconciler` (tests/support/process.py): against the code before the fix the key is
copied (and its configuration has no `allow_local` key at all). The transport pool test runs in
this process, on this checkout.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declarations import LOCAL_REFUSED
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.errors import PermanentError
from reconciler.remote.transport.local import LocalTransport
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.pool import TransportPool
from tests.support import Daemons, World, app_commit, run_reconciler
from tests.support.process import ROOT, check_code_under_test, code_under_test
from tests.support.sshd import SshServer

LOCAL = "local.example.com"   # server = "local": its script would steal the key
REMOTE = "ssh.example.com"    # on the test sshd: must converge in the same pass


def _source() -> Path | None:
    return check_code_under_test() if code_under_test() != ROOT else None


def _world(tmp_path: Path, server: SshServer, daemons: Daemons | None = None) -> tuple[World, Path]:
    """A world whose config does NOT opt in to local sites, with one site on the sshd and one on
    "local" whose script copies the reconciler's private key to the returned path."""
    world = World.create(tmp_path, server, daemons=daemons, allow_local=None)
    assert "allow_local" not in tomllib.loads(world.config.read_text())
    stolen = tmp_path / "stolen-identity"
    world.declare(REMOTE)
    world.declare(LOCAL, server="local",
                  script=f"cat {shlex.quote(str(server.identity_file))} > {shlex.quote(str(stolen))}\n")
    return world, stolen


def _cli(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return run_reconciler(*world.flags(), *args, cwd=world.tmp, timeout=120, source=_source())


def _status(world: World) -> dict[str, dict[str, Any]]:
    done = _cli(world, "status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return {view["domain"]: view for view in json.loads(done.stdout)}


def _refused(world: World, stolen: Path, what: str) -> None:
    assert not stolen.exists(), f"{what}: a local site's script ran as the reconciler user and copied its key"
    assert not world.on_disk(LOCAL).deployments.exists(), f"{what}: a refused local site was touched"
    assert world.active(LOCAL) is None


def test_a_local_site_is_refused_without_allow_local_and_the_others_converge(
        tmp_path: Path, sshd_session: SshServer) -> None:
    world, stolen = _world(tmp_path, sshd_session)

    done = _cli(world, "reconcile")
    _refused(world, stolen, "reconcile")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines() if ": " in line}
    assert lines[LOCAL] == (f"{LOCAL}: Invalid/Unknown - sites.d/{LOCAL}.toml:1: server: {LOCAL_REFUSED}"), done.stdout
    assert lines[REMOTE].startswith(f"{REMOTE}: Synced/Healthy"), done.stdout
    assert world.active(REMOTE) is not None, "the other site of the same pass must converge"
    assert "Traceback" not in done.stderr, done.stderr

    views = _status(world)
    assert views[LOCAL]["sync"] == "Invalid" and LOCAL_REFUSED in views[LOCAL]["message"], views[LOCAL]
    assert views[LOCAL]["server"] == "local"
    assert views[REMOTE]["sync"] == "Synced", views[REMOTE]

    # The other commands that could touch a site refuse it too.
    for args in (("reconcile", "--site", LOCAL), ("diff",), ("prune", "--keep", "1"), ("unlock", LOCAL)):
        done = _cli(world, *args)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        _refused(world, stolen, " ".join(args))

    # `validate` judges with the same settings: the committed tip and the work tree alike.
    for target in ((), (str(world.decl),)):
        done = _cli(world, "validate", *target)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"sites.d/{LOCAL}.toml:1: server: {LOCAL_REFUSED}" in done.stdout, done.stdout
        assert "1 valid, 1 invalid" in done.stdout, done.stdout


def test_allow_local_opts_in_and_turning_it_off_stops_all_local_work(
        tmp_path: Path, sshd_session: SshServer) -> None:
    world, stolen = _world(tmp_path, sshd_session)
    world.write_config(allow_local=True)

    done = _cli(world, "reconcile")
    assert done.returncode == 0, done.stdout + done.stderr
    # Opting in means exactly this: the committer's script ran as the reconciler user, keys in reach.
    assert stolen.read_bytes() == sshd_session.identity_file.read_bytes()
    stolen.unlink()
    app_commit(world.app, "v2")
    assert _cli(world, "reconcile").returncode == 0
    releases = world.releases(LOCAL)
    assert len(releases) == 2 and world.active(LOCAL) is not None
    stolen.unlink()

    # Opting out again: no new deploy, no prune, no script; the site is reported Invalid.
    world.write_config(allow_local=None)
    assert "allow_local" not in tomllib.loads(world.config.read_text())
    app_commit(world.app, "v3")
    done = _cli(world, "reconcile")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{LOCAL}: Invalid/Unknown - sites.d/{LOCAL}.toml:1: server: {LOCAL_REFUSED}" in done.stdout
    assert f"{REMOTE}: Synced/Healthy" in done.stdout, done.stdout
    assert _cli(world, "prune", "--keep", "1").returncode == 0
    assert not stolen.exists(), "the script ran although allow_local was turned off"
    assert world.releases(LOCAL) == releases, "a refused local site was deployed or pruned"
    assert len(world.releases(REMOTE)) == 1, "prune --keep 1 still prunes the other site"


def test_the_daemon_refuses_a_local_site_and_converges_the_others(
        tmp_path: Path, sshd_session: SshServer, daemons: Daemons) -> None:
    world, stolen = _world(tmp_path, sshd_session, daemons)
    if (source := _source()) is not None:
        world.launcher.source = source
    world.start_daemon()
    world.wait(lambda: world.active(REMOTE) is not None, "the ssh site deployed by the daemon")
    views = world.wait(lambda: (v := world.launcher.status()).get(LOCAL, {}).get("sync") not in (None, "Unknown")
                       and v, "the local site reported")
    _refused(world, stolen, "the daemon")
    assert views[LOCAL]["sync"] == "Invalid" and LOCAL_REFUSED in views[LOCAL]["message"], views[LOCAL]


def test_the_transport_pool_is_the_last_gate(tmp_path: Path) -> None:
    """Whatever path reaches a transport (log streaming included), "local" needs allow_local."""
    options = SshOptions(None, None, None, 5.0)
    with pytest.raises(PermanentError, match="allow_local = true"):
        TransportPool(options).get("local")
    pool = TransportPool(options, allow_local=True)
    assert isinstance(pool.get("local"), LocalTransport)
    pool.allow_local = False  # a SIGHUP that turns it off: the cached transport is not handed out
    with pytest.raises(PermanentError):
        pool.get("local")
    asyncio.run(pool.close())


def test_a_sighup_that_changes_allow_local_applies_to_the_parsed_commit(tmp_path: Path) -> None:
    """The daemon parses a commit once; the refusal is applied to it on every load with the
    settings of the moment, so SIGHUP opts in or out without a new commit (and a refusal never
    edits the cached parse)."""
    world = World.create(tmp_path, allow_local=None)
    world.declare(LOCAL)

    async def loads() -> list[tuple[list[str], list[str]]]:
        reconciler = Reconciler(world.settings(allow_local=False), Store(world.state / "reconciler.db"))
        seen = []
        try:
            for allow in (False, True, False):
                reconciler.reconfigure(world.settings(allow_local=allow))
                decls = await reconciler.load_async()
                seen.append((sorted(decls.sites), sorted(decls.invalid)))
                assert reconciler.pool.allow_local is allow
        finally:
            await reconciler.close()
            reconciler.store.close()
        return seen

    assert asyncio.run(loads()) == [([], [LOCAL]), ([LOCAL], []), ([], [LOCAL])]
