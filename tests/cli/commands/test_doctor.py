"""`reconciler doctor [SERVER]`: checks what each server needs for its declared sites and says
what is missing, with the fix; exit 0 when nothing is, 1 when something is (an unreachable
server too), 2 for a usage error. Run on the local transport and over a real sshd, with
programs really missing from the server's PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli_world import DOMAIN, OTHER, CliWorld
from tests.support.restricted_path import path_without
from tests.support.sshd import SshServer
from tests.support.world import World

HEALTH_URL = {"health": {"url": "http://127.0.0.1:9/up"}}


def test_doctor_on_the_local_transport_says_what_is_missing_and_the_fix(world: CliWorld, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    world.declare(**HEALTH_URL)
    out = world.ok("doctor")
    assert out.startswith("local: all 6 checks passed (1 site(s))"), out
    for what in ("git", "timeout", "GNU find", "curl", f"git access to {world.app}", f"disk space for {world.base}"):
        assert f"  ok       {what}" in out, (what, out)
    # The server's PATH loses curl, and a second site's repository does not exist.
    monkeypatch.setenv("PATH", path_without(tmp_path, "curl"))
    world.declare(OTHER, repository=tmp_path / "no-such-repo.git")
    rc, out, err = world.cli("doctor")
    assert rc == 1, (out, err)
    assert out.startswith("local: 2 of 7 missing (2 site(s))"), out
    lines = out.splitlines()
    curl = next(i for i, line in enumerate(lines) if line.startswith("  MISSING  curl"))
    assert "not found on PATH" in lines[curl]
    assert lines[curl + 1].strip() == "why: [health] url checks fetch the URL with curl"
    assert lines[curl + 2].strip().startswith("fix: install curl on the server")
    assert f"  MISSING  git access to {tmp_path / 'no-such-repo.git'}" in out
    assert world.cli("doctor", "local").rc == 1
    assert DOMAIN not in out  # the report is about servers, not sites


def test_doctor_checks_a_php_site_s_reload_and_fpm(world: CliWorld) -> None:
    world.declare(php="8.2")
    rc, out, err = world.cli("doctor")
    assert rc == 1, (out, err)
    fpm = next(line for line in out.splitlines() if line.startswith("  MISSING  PHP-FPM 8.2 process_control_timeout"))
    assert fpm.endswith("  no /etc/php/8.2/fpm/php-fpm.conf here"), out
    assert "set process_control_timeout = 10s in the [global] section of /etc/php/8.2/fpm/php-fpm.conf" in out
    assert "passwordless sudo for service php8.2-fpm reload" in out


def test_a_server_no_site_names_gets_the_basics(world: CliWorld) -> None:
    """Check a new server before declaring a site on it."""
    assert world.ok("doctor") == "doctor: no site is declared on any server; name one: reconciler doctor SERVER\n"
    out = world.ok("doctor", "local")
    assert out.startswith("local: all 3 checks passed (no site declared on it: the basics only)"), out


def test_doctor_usage_errors_exit_2(world: CliWorld) -> None:
    world.declare()
    done = world.run_cli_process("doctor", "--no-such-flag")
    assert done.returncode == 2, done
    assert "unrecognized arguments: --no-such-flag" in done.stderr
    done = world.run_cli_process("doctor", "--help")
    assert done.returncode == 0 and "usage: reconciler doctor [-h] [server]" in done.stdout, done


def _restrict_sessions_path(server: SshServer, path: str) -> None:
    """The sshd's sessions get `path` as their PATH (sshd's SetEnv), as a server's login would."""
    config = server.sshd_config.read_text()
    home_line = next(line for line in config.splitlines() if line.startswith("SetEnv HOME="))
    server.sshd_config.write_text(config.replace(home_line, f"{home_line} PATH={path}"))
    server.restart()


def test_doctor_over_ssh_names_what_the_server_lacks(sshd: SshServer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    world = World.create(tmp_path / "w", server=sshd)
    world.declare(**HEALTH_URL)
    rc, out, err = world.run_cli("doctor", sshd.destination)
    assert rc == 0, (out, err)
    assert out.startswith(f"{sshd.destination}: all 6 checks passed (1 site(s))"), out
    _restrict_sessions_path(sshd, path_without(tmp_path, "curl", "timeout"))
    rc, out, err = world.run_cli("doctor")
    assert rc == 1, (out, err)
    assert out.startswith(f"{sshd.destination}: 2 of 6 missing (1 site(s))"), out
    assert "  MISSING  timeout" in out and "  MISSING  curl" in out and "  ok       git" in out
    # A server that cannot be reached is missing everything: said, with the fix, exit 1.
    sshd.stop()
    rc, out, err = world.run_cli("doctor")
    assert rc == 1, (out, err)
    assert out.startswith(f"{sshd.destination}: cannot check: "), out
