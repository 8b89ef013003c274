"""Operator conveniences: diff/plan, status D in detail, colour rules, nginx, completion."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from reconciler.cli.main import main as cli
from reconciler.cli.render import table, use_color
from tests.support import app_commit, make_app_repo, make_decl_repo, write_config, write_site

DOMAIN = "extras.example.com"


@pytest.fixture
def world(tmp_path: Path) -> tuple[list[str], Path, Path]:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app), php="8.3")
    opt_in = write_config(tmp_path / "reconciler.toml", interval=None)  # allow_local = true: the site is "local"
    return ["--repo", str(decl), "--state-dir", str(tmp_path / "state"), "--config", str(opt_in)], base, app


def test_diff_shows_the_plan_changes_nothing_and_exits_1_only_when_there_is_work(
        world: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    flags, base, app = world
    # No php-fpm here: a reload that works, or the owed reload would be work too (issue 11 item 4).
    write_site(Path(flags[1]), DOMAIN, server="local", base_path=str(base), repository=str(app), reload="true")
    assert cli([*flags, "diff"]) == 1
    out = capsys.readouterr().out
    assert f"{DOMAIN} (local):" in out and "+ deploy" in out and "+ provision" in out
    assert not base.exists(), "diff must not touch the server"
    assert cli([*flags, "reconcile"]) == 0
    capsys.readouterr()
    assert cli([*flags, "plan"]) == 0
    assert "up to date" in capsys.readouterr().out
    app_commit(app, "v2")
    assert cli([*flags, "diff"]) == 1
    assert "+ deploy" in capsys.readouterr().out


def test_status_of_one_site_says_why_and_lists_its_last_deployments(
        world: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    flags, _, app = world
    for n in range(6):
        app_commit(app, f"v{n}")
        cli([*flags, "reconcile"])
    decl = Path(flags[1])
    write_site(decl, DOMAIN, server="local", base_path=str(world[1]), repository=str(app), php="8.3",
               script="exit 7\n")
    assert cli([*flags, "reconcile"]) == 1
    capsys.readouterr()
    assert cli([*flags, "status", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert "sync:      Failed" in out and "why:" in out and "exit 7" in out
    deployment_lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(deployment_lines) == 5, out
    assert any(line.rstrip().endswith("active") for line in deployment_lines)


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    main_fd, other_fd = pty.openpty()
    try:
        with os.fdopen(other_fd, "w", closefd=False) as terminal:
            monkeypatch.delenv("NO_COLOR", raising=False)
            assert use_color(terminal)
            monkeypatch.setenv("NO_COLOR", "1")
            assert not use_color(terminal)
    finally:
        os.close(main_fd)
        os.close(other_fd)
    assert "\033[" in table(["SYNC"], [["Failed"]], color=True)
    assert "\033[" not in table(["SYNC"], [["Failed"]], color=False)


def test_nginx_block_uses_the_site_symlink_and_realpath_root(
        world: tuple[list[str], Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    flags, base, _ = world
    assert cli([*flags, "nginx", DOMAIN]) == 0
    out = capsys.readouterr().out
    assert f"root {base / DOMAIN}/public;" in out
    assert "fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;" in out
    assert "fastcgi_param DOCUMENT_ROOT $realpath_root;" in out
    assert "php8.3-fpm.sock" in out
    assert cli([*flags, "nginx", "nope.example.com"]) == 1


def test_bash_completion_completes_commands(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli(["completion", "bash"]) == 0
    script = tmp_path / "completion.sh"
    script.write_text(capsys.readouterr().out)
    probe = f'source {script}; COMP_WORDS=(reconciler ro); COMP_CWORD=1; _reconciler; echo "${{COMPREPLY[@]}}"'
    result = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["rollback"]


def test_every_command_has_an_example_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    from reconciler.cli.commands import COMMANDS as _COMMANDS

    for name in _COMMANDS:
        with pytest.raises(SystemExit):
            cli([name, "--help"])
        assert "example:\n  reconciler" in capsys.readouterr().out or name == "completion", name
