"""Pins are only ever signed on verified ground.

Threat model: someone who can push to the declarations branch but not sign gets nothing applied.
Before this change a routine `rollback` or `unpin` of ANY site, from the CLI or the HTTP API,
signed its pin commit on top of the branch tip, verified or not. A signed child vouches for its
parent, so the daemon then applied everything under it: the unsigned commit's script of ANOTHER
site ran. Now the pin is committed only when the tip is the commit the reconciler would apply
(signed by a trust root and descending from the last verified commit); otherwise the action is
refused (exit 1 / HTTP 409) naming the unverified commit, and nothing is committed. With
declarations on a Git host every push-rejected retry checks the new tip again.

Real git repositories, real ssh-keygen signatures, the CLI in this process, a real daemon process
for the HTTP API, and a real declarations "Git host" (a bare repository behind a file:// URL).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import Settings
from reconciler.engine import actions, upstream
from reconciler.engine.converge import Reconciler
from reconciler.engine.store import Store
from reconciler.errors import UnverifiedTip
from tests.support import (
    app_commit,
    cli_in_process,
    free_port,
    git,
    make_app_repo,
    make_decl_repo,
    site_file,
    toml_value,
    wait_until,
    write_config,
)
from tests.support.client import call
from tests.support.repos import ssh_key

A, B = "a.example.com", "b.example.com"
TOKEN = "pin-ground-token-0123456789"


class World:
    """Two local sites, A and B, declared in a repository whose commits the operators sign."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.app = make_app_repo(tmp / "app")
        self.decl = make_decl_repo(tmp / "decl")
        self.ops, self.pinner = ssh_key(tmp / "ops"), ssh_key(tmp / "pinner")
        self.signers = tmp / "allowed_signers"
        self.signers.write_text("".join(f'ops@localhost namespaces="git" {Path(f"{k}.pub").read_text().strip()}\n'
                                        for k in (self.ops, self.pinner)))
        self.canary = tmp / "UNSIGNED-CODE-RAN"

    def write(self, domain: str, script: str) -> None:
        fields = {"server": "local", "base_path": str(self.tmp / "srv"), "repository": str(self.app),
                  "script": script}
        site_file(self.decl, domain).write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))

    def commit(self, message: str, signed: bool, repo: Path | None = None) -> str:
        repo = repo or self.decl
        git(repo, "add", "-A")
        sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={self.ops}"] if signed else []
        subprocess.run(["git", *sign, "commit", "-q", "-m", message, *(["-S"] if signed else [])],
                       cwd=repo, check=True, capture_output=True)
        return git(repo, "rev-parse", "HEAD")

    def config(self, repo: Path | str | None = None, **extra: Any) -> Path:
        return write_config(self.tmp / "reconciler.toml", repo=repo or self.decl, state=self.tmp / "state",
                            require_signed="head", allowed_signers=self.signers, signing_key=self.pinner, **extra)

    def settings(self, repo: Path | str) -> Settings:
        return Settings(repo=repo, state_dir=self.tmp / "state", allow_local=True, require_signed="head",
                        allowed_signers=self.signers, signing_key=self.pinner)

    def deployed_twice(self, config: Path) -> None:
        """A and B live, each with an older successful release to roll back to."""
        self.write(A, "echo site a\n")
        self.write(B, "echo site b\n")
        self.commit("sites a and b", signed=True)
        assert cli_in_process(["--config", str(config), "reconcile"])[0] == 0
        app_commit(self.app, "v2")
        assert cli_in_process(["--config", str(config), "reconcile"])[0] == 0

    def push_unsigned_attack(self, repo: Path | None = None) -> str:
        """What someone who can push but not sign does: B's script runs their code."""
        repo = repo or self.decl
        self.write(B, f"touch {self.canary}\necho site b\n")
        if repo != self.decl:
            subprocess.run(["cp", str(site_file(self.decl, B)), str(site_file(repo, B))], check=True)
        return self.commit("innocent refactor", signed=False, repo=repo)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    return cli_in_process(["--config", str(config), *args])


def test_rollback_and_unpin_refuse_to_sign_on_an_unsigned_tip(world: World) -> None:
    config = world.config()
    world.deployed_twice(config)
    # A pin made while the tip is verified works (and is itself the verified tip afterwards).
    rc, out, err = _cli(config, "rollback", A)
    assert rc == 0, (out, err)
    assert _cli(config, "reconcile")[0] == 0

    bad = world.push_unsigned_attack()
    rc, out, err = _cli(config, "reconcile")
    assert "is not signed; not applied" in out + err, (out, err)

    live = (world.tmp / "srv" / A).readlink().name
    other = next(p.name for p in (world.tmp / "srv" / "deployments" / A).iterdir()
                 if p.name[:1].isdigit() and p.name != live)
    for action in (["unpin", A], ["rollback", A, other]):
        rc, out, err = _cli(config, *action)
        assert rc == 1, (action, out, err)
        assert bad[:12] in err and "not signed" in err and "nothing was committed" in err, err
        assert git(world.decl, "rev-parse", "main") == bad, f"{action}: something was committed"

    assert _cli(config, "reconcile")[0] in (0, 1)
    assert not world.canary.exists(), "the unsigned commit's script ran"
    assert "touch" not in (world.tmp / "srv" / B / "deployment.log").read_text()


def test_a_signed_tip_on_top_of_the_verified_one_is_verified_ground(world: World) -> None:
    """Not over-strict: a new tip signed by a trust root that descends from the applied commit is
    what the daemon will apply next, so a pin may sit on it before the daemon got to it."""
    config = world.config()
    world.deployed_twice(config)
    world.write(B, "echo site b, reviewed change\n")
    signed = world.commit("reviewed change", signed=True)
    rc, out, err = _cli(config, "rollback", A)
    assert rc == 0, (out, err)
    assert git(world.decl, "rev-parse", "main^") == signed


def _post(port: int, path: str, body: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    answer = call(f"http://127.0.0.1:{port}{path}", json_body=body or {}, token=TOKEN, timeout=60)
    return answer.status, answer.json()


@pytest.mark.daemon
def test_the_api_refuses_to_sign_on_an_unsigned_tip(world: World, daemons: Any) -> None:
    port = free_port()
    config = world.config(listen=f"127.0.0.1:{port}", api_token=TOKEN, interval=1)
    world.deployed_twice(config)
    assert _cli(config, "rollback", A)[0] == 0
    launcher = daemons.launcher(world.tmp, config)
    daemon = launcher.start()
    wait_until(lambda: launcher.status()[A]["pinned"] is not None and launcher.status()[A]["sync"] == "Synced",
               what="the daemon applied A's pin", diagnostics=launcher.diagnostics)

    bad = world.push_unsigned_attack()
    wait_until(lambda: "not signed" in daemon.output(), what="the daemon saw the unsigned tip",
               diagnostics=launcher.diagnostics)
    live = (world.tmp / "srv" / A).readlink().name
    other = next(p.name for p in (world.tmp / "srv" / "deployments" / A).iterdir()
                 if p.name[:1].isdigit() and p.name != live)
    for action, asked in (("unpin", {}), ("rollback", {"release": other})):
        code, body = _post(port, f"/api/sites/{A}/{action}", asked)
        assert code == 409, (action, code, body)
        assert bad[:12] in json.dumps(body), body
        assert git(world.decl, "rev-parse", "main") == bad, f"{action}: something was committed"
    # A pass applies whatever was committed (the daemon's, or this one beside it): nothing was.
    assert _cli(config, "reconcile")[0] in (0, 1)
    assert not world.canary.exists(), "the unsigned commit's script ran"


def test_every_push_rejected_retry_checks_the_new_tip(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Declarations on a Git host: the rollback fetched a verified tip, but by the time it pushes,
    someone pushed an unsigned commit there. The push is rejected for real (not a fast-forward);
    the retry fetches, finds the unverified tip and refuses rather than sign on it."""
    host = world.tmp / "host.git"
    world.write(A, "echo site a\n")
    world.write(B, "echo site b\n")
    world.commit("sites a and b", signed=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(world.decl), str(host)], check=True)
    url = f"file://{host}"
    config = world.config(repo=url)
    assert _cli(config, "reconcile")[0] == 0
    app_commit(world.app, "v2")
    assert _cli(config, "reconcile")[0] == 0

    attacker = world.tmp / "attacker"
    subprocess.run(["git", "clone", "-q", str(host), str(attacker)], check=True)
    real_push = upstream.Upstream.push
    pushes: list[str] = []

    def push_after_the_attacker(self: upstream.Upstream, commit: str, expected: str) -> None:
        if not pushes:  # the attacker's push lands between our fetch and our push
            world.push_unsigned_attack(repo=attacker)
            subprocess.run(["git", "push", "-q", "origin", "main"], cwd=attacker, check=True, capture_output=True)
        pushes.append(commit)
        real_push(self, commit, expected)

    monkeypatch.setattr(upstream.Upstream, "push", push_after_the_attacker)

    async def rollback() -> None:
        settings = world.settings(url)
        reconciler = Reconciler(settings, Store(settings.db_path))
        try:
            await actions.rollback(reconciler, A, None, author="Op <op@localhost>")
        finally:
            await reconciler.close()
            reconciler.store.close()

    with pytest.raises(UnverifiedTip) as refused:
        asyncio.run(rollback())
    bad = git(host, "rev-parse", "main")
    assert len(pushes) == 1, "the retry must refuse before it signs and pushes again"
    assert bad[:12] in str(refused.value), refused.value
    assert git(host, "log", "-1", "--format=%s", "main") == "innocent refactor"  # nothing pushed on top
    assert _cli(config, "reconcile")[0] in (0, 1)
    assert not world.canary.exists(), "the unsigned commit's script ran"
