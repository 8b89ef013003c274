"""Declarations on a Git host: `repo` is a URL, the reconciler keeps its
own mirror, fetches it, and writes rollback/unpin back by pushing.

Real remotes started by the tests: a bare repository served over the test sshd (git over SSH,
host key verified against the configured known_hosts) and over smart HTTP (`git http-backend`
behind tests/support/githost.py, which demands a token). An operator's clone pushes to them
like a developer would. Sites are "local" (allow_local) so the Git host is what is under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.engine import actions
from reconciler.engine.upstream import Upstream
from tests.support import (
    app_commit,
    cli_in_process,
    free_port,
    git,
    make_app_repo,
    toml_value,
    wait_until,
    write_config,
)
from tests.support.githost import GitHttpHost
from tests.support.process import Daemons
from tests.support.receiver import receiving
from tests.support.sshd import SshServer

DOMAIN = "shop.example.com"
OTHER = "blog.example.com"
TOKEN = "s3cr3t-repo-token-XYZ"


class Remote:
    """A bare repository on a Git host, and an operator's clone of it."""

    def __init__(self, tmp: Path, bare: Path, url: str) -> None:
        self.tmp, self.bare, self.url = tmp, bare, url
        self.work = tmp / "operator"
        git(tmp, "clone", "-q", str(bare), str(self.work))
        git(self.work, "checkout", "-q", "-B", "main")

    def push_site(self, domain: str, message: str, **fields: Any) -> str:
        (self.work / "sites.d").mkdir(exist_ok=True)
        (self.work / "sites.d" / f"{domain}.toml").write_text(
            "".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", message)
        git(self.work, "push", "-q", "origin", "HEAD:main")
        return git(self.work, "rev-parse", "HEAD")

    def tip(self) -> str:
        return git(self.bare, "rev-parse", "main")


def _bare(tmp: Path) -> Path:
    bare = tmp / "host" / "decl.git"
    bare.parent.mkdir(parents=True)
    git(tmp, "init", "-q", "--bare", "-b", "main", str(bare))
    return bare


@pytest.fixture
def ssh_remote(tmp_path: Path, sshd: SshServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Remote, Path]]:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    bare = _bare(tmp_path)
    user, _, hostport = sshd.destination.partition("@")
    host, _, port = hostport.rpartition(":")
    remote = Remote(tmp_path, bare, f"ssh://{user}@{host}:{port}{bare}")
    config = write_config(tmp_path / "reconciler.toml", repo=remote.url, state=tmp_path / "state", server=sshd)
    yield remote, config


def _site(tmp: Path) -> dict[str, Any]:
    app = tmp / "app"
    if not app.exists():
        make_app_repo(app)
    return {"server": "local", "base_path": str(tmp / "srv"), "repository": str(app), "script": "echo built\n"}


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    return cli_in_process(["--config", str(config), *args])


def _status(config: Path) -> dict[str, dict[str, Any]]:
    rc, out, err = _cli(config, "status", "--json")
    assert rc == 0, err
    return {v["domain"]: v for v in json.loads(out)}


def _deployed_twice(remote: Remote, config: Path, tmp_path: Path) -> str:
    """The shop declared on the host and deployed, then an app commit deployed: its first release."""
    remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
    assert _cli(config, "reconcile")[0] == 0
    first = (tmp_path / "srv" / DOMAIN).readlink().name
    app_commit(tmp_path / "app", "v2")
    assert _cli(config, "reconcile")[0] == 0
    return first


def test_declarations_over_ssh_deploy_and_rollback_is_pushed_with_the_operator_as_author(
        ssh_remote: tuple[Remote, Path], tmp_path: Path) -> None:
    remote, config = ssh_remote
    first = _deployed_twice(remote, config, tmp_path)

    rc, out, err = _cli(config, "rollback", DOMAIN, "--author", "Olga Ops <olga@example.com>")
    assert rc == 0, (out, err)
    # The pin is on the Git host, authored by the operator, committed by the reconciler.
    assert f'pin = "{first}"' in git(remote.bare, "show", f"main:sites.d/{DOMAIN}.toml")
    assert git(remote.bare, "log", "-1", "--format=%an <%ae>|%cn") == "Olga Ops <olga@example.com>|reconciler"
    assert _cli(config, "reconcile")[0] == 0
    assert (tmp_path / "srv" / DOMAIN).readlink().name == first
    # The operator's next push is a fast-forward once they pull: nothing diverged.
    git(remote.work, "pull", "-q", "--rebase", "origin", "main")
    assert git(remote.work, "rev-parse", "HEAD") == remote.tip()


def test_a_push_racing_the_rollback_is_kept_and_the_pin_rebased(
        ssh_remote: tuple[Remote, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote, config = ssh_remote
    first = _deployed_twice(remote, config, tmp_path)

    # Between the reconciler's fetch and its push, another operator pushes an unrelated change.
    real_push = Upstream.push
    raced: list[str] = []

    def push(self: Upstream, commit: str, expected: str) -> None:
        if not raced:
            raced.append(remote.push_site(OTHER, "declare the blog", **_site(tmp_path)))
        real_push(self, commit, expected)

    monkeypatch.setattr(Upstream, "push", push)
    rc, out, err = _cli(config, "rollback", DOMAIN)
    assert rc == 0, (out, err)
    # Both changes are on the remote: the rollback was made again on top of the other push.
    assert git(remote.bare, "rev-parse", "main^") == raced[0]
    assert f'pin = "{first}"' in git(remote.bare, "show", f"main:sites.d/{DOMAIN}.toml")
    assert (git(remote.bare, "show", f"main:sites.d/{OTHER}.toml")).startswith('server = "local"')


def test_a_conflicting_pin_change_on_the_host_is_refused(
        ssh_remote: tuple[Remote, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    remote, config = ssh_remote
    first = _deployed_twice(remote, config, tmp_path)
    real_push = Upstream.push

    def push(self: Upstream, commit: str, expected: str) -> None:
        remote.push_site(DOMAIN, "someone else pins it", **_site(tmp_path), pin=first)
        real_push(self, commit, expected)

    monkeypatch.setattr(Upstream, "push", push)
    rc, out, err = _cli(config, "rollback", DOMAIN)
    assert rc == 1 and "its pin changed" in err, (out, err)
    assert git(remote.bare, "log", "-1", "--format=%s") == "someone else pins it"
    assert actions.PUSH_ATTEMPTS >= 2


@pytest.fixture
def http_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Remote, Path, GitHttpHost]]:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    bare = _bare(tmp_path)
    git(bare, "config", "http.receivepack", "true")
    host = GitHttpHost(bare.parent, TOKEN)
    remote = Remote(tmp_path, bare, host.url("decl.git"))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = write_config(tmp_path / "reconciler.toml", repo=remote.url, state=tmp_path / "state",
                          repo_token_file=token_file)
    yield remote, config, host
    host.stop()


def test_declarations_over_https_with_a_token_and_an_unreachable_host(
        http_remote: tuple[Remote, Path, GitHttpHost], tmp_path: Path) -> None:
    remote, config, host = http_remote
    remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
    rc, out, err = _cli(config, "reconcile")
    assert rc == 0, (out, err)
    assert host.requests and all(ok for _, _, ok in host.requests), host.requests
    live = (tmp_path / "srv" / DOMAIN).readlink().name

    # The host goes away: the last fetched commit stays in force, and every site says why.
    host.stop()
    rc, out, err = _cli(config, "reconcile")
    assert (tmp_path / "srv" / DOMAIN).readlink().name == live
    message = _status(config)[DOMAIN]["message"]
    assert "unreachable" in message and "last fetched declarations stay in force" in message, message
    assert TOKEN not in out + err + message

    # Back again: a change pushed meanwhile is applied, and the message is gone.
    host.start()
    remote.push_site(DOMAIN, "new script", **{**_site(tmp_path), "script": "echo rebuilt\n"})
    rc, out, err = _cli(config, "reconcile")
    assert rc == 0, (out, err)
    assert (tmp_path / "srv" / DOMAIN).readlink().name != live
    assert "unreachable" not in _status(config)[DOMAIN]["message"]
    # The token never landed in the mirror's config.
    assert TOKEN not in (tmp_path / "state" / "declarations.git" / "config").read_text()


def test_a_wrong_token_is_refused_and_never_shown(http_remote: tuple[Remote, Path, GitHttpHost],
                                                  tmp_path: Path) -> None:
    remote, config, host = http_remote
    (tmp_path / "token").write_text("wrong-token\n")
    remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
    rc, out, err = _cli(config, "reconcile")
    assert rc != 0 and "unreachable" in out + err, (out, err)
    assert "wrong-token" not in out + err
    assert host.requests and not any(ok for _, _, ok in host.requests)


def test_the_daemon_follows_the_git_host(ssh_remote: tuple[Remote, Path], tmp_path: Path, daemons: Daemons) -> None:
    """The daemon fetches at start and every repo_interval: a push to the host goes live without
    anyone touching the reconciler's host (the webhook path is in tests/service/http/test_actions.py)."""
    remote, config = ssh_remote
    text = config.read_text() + "repo_interval = 0.5\n"
    config.write_text(text)
    remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
    launcher = daemons.launcher(tmp_path, config)
    daemon = launcher.start()
    link = tmp_path / "srv" / DOMAIN
    wait_until(link.is_symlink, 60, "the first deploy from the Git host", launcher.diagnostics)
    first = link.readlink().name
    remote.push_site(DOMAIN, "a new script", **{**_site(tmp_path), "script": "echo second\n"})
    wait_until(lambda: link.readlink().name != first, 60, "the pushed change to go live", launcher.diagnostics)
    assert daemon.alive()


def test_a_push_webhook_for_the_declarations_fetches_at_once(ssh_remote: tuple[Remote, Path], tmp_path: Path,
                                                              daemons: Daemons) -> None:
    """A delivery naming the declarations repository (in any of its URL forms)
    makes the daemon fetch now, instead of at the next repo_interval (here far away)."""
    remote, config = ssh_remote
    port = free_port()
    config.write_text(config.read_text() + f'repo_interval = 600\nlisten = "127.0.0.1:{port}"\n'
                      'api_token = "t"\nwebhook_secret = "hook-secret"\n')
    remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
    launcher = daemons.launcher(tmp_path, config)
    launcher.start()
    link = tmp_path / "srv" / DOMAIN
    wait_until(link.is_symlink, 60, "the first deploy from the Git host", launcher.diagnostics)
    first = link.readlink().name
    remote.push_site(DOMAIN, "a new script", **{**_site(tmp_path), "script": "echo second\n"})
    host = remote.url.split("@", 1)[1].split(":", 1)[0]
    body = json.dumps({"repository": {"ssh_url": f"git@{host}:{remote.bare}", "clone_url": "https://x/y"}}).encode()
    digest = hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=body, method="POST", headers={
        "X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Delivery": "d-1", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202 and json.loads(response.read())["declarations"] is True
    wait_until(lambda: link.readlink().name != first, 60, "the pushed change to go live after the webhook",
               launcher.diagnostics)


def test_an_unreachable_declarations_host_is_an_alarm_until_the_first_fetch_that_succeeds(
        ssh_remote: tuple[Remote, Path], tmp_path: Path, sshd: SshServer) -> None:
    """While the declarations' Git host cannot be fetched, `reconcile` exits non-zero and says
    so, `status --exit-code` alarms, and `[[notify]]` hears `unreachable` once; the first fetch
    that succeeds clears all of it at once (and `recovered` is sent once)."""
    remote, config = ssh_remote
    with receiving() as receiver:
        config.write_text(config.read_text() + f'\n[[notify]]\nurl = "{receiver.root}/oncall"\n')
        remote.push_site(DOMAIN, "declare the shop", **_site(tmp_path))
        assert _cli(config, "reconcile")[0] == 0
        assert _cli(config, "status", "--exit-code")[0] == 0

        sshd.stop()
        for _ in range(2):
            rc, out, err = _cli(config, "reconcile")
            assert rc == 1 and "declarations repository" in err and "unreachable" in err, (out, err)
        rc, out, err = _cli(config, "status", "--exit-code")
        assert rc == 3 and "unreachable" in err, (out, err)
        assert _cli(config, "status")[0] == 0  # an alarm only when asked for one
        down = [p.body for p in receiver.at("/oncall", "unreachable")]
        assert len(down) == 1 and down[0]["domain"] is None and down[0]["server"] is None, down
        assert down[0]["text"].startswith("declarations repository UNREACHABLE: "), down[0]

        sshd.start()
        rc, out, err = _cli(config, "reconcile")
        assert rc == 0 and "unreachable" not in out + err, (out, err)
        assert _cli(config, "status", "--exit-code") == (0, _cli(config, "status")[1], "")
        assert "unreachable" not in _status(config)[DOMAIN]["message"]
        assert _cli(config, "reconcile")[0] == 0
        assert [p.body["event"] for p in receiver.at("/oncall") if p.body["domain"] is None] == [
            "unreachable", "recovered"]
