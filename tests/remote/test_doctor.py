"""remote/doctor.py: which checks a server's sites call for, and the deploy user's git access
to an app repository on a real Git host (an sshd) checked with a real `git ls-remote`: a
missing known_hosts entry and a key the host refuses are each told apart, with the fix."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.remote.doctor import Finding, examine, explain, requirements
from reconciler.remote.protocol.doctoring import Kind
from reconciler.remote.transport.local import LocalTransport
from reconciler.remote.transport.options import SshOptions
from reconciler.remote.transport.ssh import SshTransport
from tests.support import make_app_repo
from tests.support.sshd import SshServer


def site(domain: str = "shop.example.com", **fields: Any) -> SiteDeclaration:
    return SiteDeclaration.model_validate({"domain": domain, "server": "web-1", "repository": "/srv/git/shop.git",
                                           **fields})


def kinds(sites: list[SiteDeclaration]) -> list[tuple[str, tuple[str, ...]]]:
    return [(need.check.kind.value, need.check.args) for need in requirements(sites)]


def test_the_basics_are_always_checked_and_the_rest_as_the_sites_need() -> None:
    assert kinds([]) == [("program", ("git",)), ("program", ("timeout",)), ("gnu_find", ())]
    needs = kinds([site(php="8.2", base_path="/srv/a", health={"url": "http://127.0.0.1/up"}),
                   site("blog.example.com", php="8.2", base_path="/srv/a", repository="git@git.example.com:b.git"),
                   site("api.example.com", php="8.3", reload="sudo systemctl reload php-fpm")])
    assert needs[3:] == [
        ("program", ("curl",)),  # a [health] url
        ("git_remote", ("/srv/git/shop.git",)), ("git_remote", ("git@git.example.com:b.git",)),  # each once
        ("sudo", ("service", "php8.2-fpm", "reload")),  # 8.3 has its own reload: no sudo check
        ("fpm", ("/etc/php/8.2/fpm/php-fpm.conf",)), ("fpm", ("/etc/php/8.3/fpm/php-fpm.conf",)),
        ("disk", ("/home/brokeforge", "1048576")), ("disk", ("/srv/a", "1048576")),
    ]


def test_the_git_fix_names_the_repository_s_host() -> None:
    fixes = {need.check.args[0]: need.fix for need in requirements([
        site(repository="ssh://git@[::1]:2200/srv/shop.git"), site("b.example.com", repository="git@gh.example:b.git"),
        site("c.example.com", repository="https://git.example.com/c.git")]) if need.check.kind is Kind.GIT_REMOTE}
    assert "ssh-keyscan -H ::1 >> ~/.ssh/known_hosts" in fixes["ssh://git@[::1]:2200/srv/shop.git"]
    assert "ssh-keyscan -H gh.example >> ~/.ssh/known_hosts" in fixes["git@gh.example:b.git"]
    assert "git credential for git.example.com" in fixes["https://git.example.com/c.git"]
    assert "readable by the deploy user" in requirements([site()])[3].fix


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def test_git_access_tells_a_missing_known_host_from_a_refused_key(sshd: SshServer, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The deploy user's own ssh (here: its key and known_hosts files, through GIT_SSH_COMMAND)
    reaching the Git host: no host key, then a key the host does not accept, then both right."""
    bare = tmp_path / "shop.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(make_app_repo(tmp_path / "app")), str(bare)], check=True)
    url = f"ssh://{sshd.user}@{sshd.host}:{sshd.port}{bare}"
    known_hosts, key = tmp_path / "known_hosts", _keygen(tmp_path / "deploy_key")
    known_hosts.write_text("")
    # An absolute ssh: the deploy's multiplexing (gitenv) stays out of the way.
    monkeypatch.setenv("GIT_SSH_COMMAND", f"{shutil.which('ssh')} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes "
                       f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
                       "-o StrictHostKeyChecking=yes")
    [need] = [need for need in requirements([site(repository=url)]) if need.check.kind is Kind.GIT_REMOTE]

    def check() -> Finding:
        [finding] = asyncio.run(examine(LocalTransport(), [need], 60))
        return finding

    no_host_key = check()
    assert not no_host_key.ok
    assert explain(no_host_key).startswith("the git host's key is not in the deploy user's known_hosts")
    assert f"ssh-keyscan -H {sshd.host} >> ~/.ssh/known_hosts" in need.fix
    known_hosts.write_text(sshd.known_hosts_line)
    refused = check()
    assert not refused.ok and explain(refused).startswith("the git host refused the deploy user's key")
    shutil.copy(sshd.identity_file, key)
    shutil.copy(f"{sshd.identity_file}.pub", f"{key}.pub")
    assert check().ok


def test_every_check_of_a_server_is_one_command(sshd: SshServer, tmp_path: Path) -> None:
    """However many sites and repositories a server has, the doctor sends it one command."""
    app = make_app_repo(tmp_path / "app")
    sites = [site(f"s{n}.example.com", repository=str(app), base_path=str(tmp_path / f"b{n % 3}"), php="8.2")
             for n in range(12)]
    needs = requirements(sites)
    transport = SshTransport(sshd.destination, SshOptions(identity_file=sshd.identity_file,
                                                          known_hosts=sshd.known_hosts))

    async def go() -> list[Finding]:
        try:
            return await examine(transport, needs, 60)
        finally:
            await transport.close()

    findings = asyncio.run(go())
    assert len(findings) == len(needs) == 3 + 1 + 1 + 1 + 3  # basics, one repo, sudo, fpm, three base paths
    assert transport.round_trips == 1
    assert [f.requirement.what for f in findings if not f.ok] == ["PHP-FPM 8.2 process_control_timeout"]
