"""`reconciler` itself (cli.main): the parser read from the table of commands, the dispatch to
the one command that runs, and the exit statuses of SPEC section 5 that hold for every command: 2
for a bad config before anything runs (and for declarations `reconcile` cannot read), 1 for a
site that no command knows, and usage that shows an example. Sites use `server = "local"` with a
base path under tmp_path; the CLI runs in this process."""

from __future__ import annotations

import pytest

from reconciler.cli.commands import COMMANDS
from reconciler.cli.main import main as cli
from tests.support.cli_world import CliWorld, tree

NOPE = "nope.example.com"


@pytest.mark.parametrize(
    "config_text",
    [
        pytest.param("colour = 'blue'\n", id="unknown-key"),
        pytest.param("concurrency = 0\n", id="concurrency-0"),
        pytest.param("concurrency = [\n", id="toml-syntax-error"),
        pytest.param("interval = 'often'\n", id="wrong-type"),
    ],
)
def test_reconcile_exits_2_on_a_bad_config_and_touches_nothing(world: CliWorld, config_text: str) -> None:
    world.declare()
    config = world.tmp / "reconciler.toml"
    config.write_text(config_text)
    rc, out, err = world.run(
        "--config", str(config), "--repo", str(world.decl), "--state-dir", str(world.state), "reconcile"
    )
    assert rc == 2, (out, err)
    assert str(config) in err, err
    assert tree(world.base) == []
    assert not world.state.exists()


def test_reconcile_exits_2_when_the_config_file_is_missing(world: CliWorld) -> None:
    world.declare()
    rc, out, err = world.run("--config", str(world.tmp / "nope.toml"), "--repo", str(world.decl), "reconcile")
    assert rc == 2, (out, err)
    assert tree(world.base) == []


def test_reconcile_exits_2_when_the_declarations_repo_does_not_exist(world: CliWorld) -> None:
    rc, out, err = world.cli("reconcile", repo=world.tmp / "no-such-repo")
    assert rc == 2, (out, err)
    assert "no-such-repo" in err
    not_a_repo = world.tmp / "plain-dir"
    (not_a_repo / "sites.d").mkdir(parents=True)
    rc, out, err = world.cli("reconcile", repo=not_a_repo)
    assert rc == 2, (out, err)


def test_a_plain_directory_inside_another_git_repo_is_not_a_declarations_repo(world: CliWorld) -> None:
    # app/public is a plain directory inside the app's work tree: it is not the declarations
    # repository, and the enclosing repository must not be used in its place (nor committed to).
    rc, out, err = world.cli("reconcile", repo=world.app / "public")
    assert rc == 2, (out, err)


@pytest.mark.parametrize("command", [
    ("status", NOPE), ("status", "--json", NOPE), ("history", NOPE), ("logs", NOPE), ("prune", "--site", NOPE),
    ("diff", "--site", NOPE), ("reconcile", "--site", NOPE), ("rollback", NOPE), ("unpin", NOPE), ("nginx", NOPE),
])
def test_an_unknown_site_is_an_error_for_every_command(world: CliWorld, command: tuple[str, ...]) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    rc, out, err = world.cli(*command)
    assert rc == 1, (command, out, err)
    assert NOPE in err and ("unknown site" in err or "no such" in err), (command, err)


def test_every_command_has_an_example_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            cli([name, "--help"])
        assert "example:\n  reconciler" in capsys.readouterr().out or name == "completion", name


def test_an_unknown_command_or_none_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["nosuch"], []):
        with pytest.raises(SystemExit) as caught:
            cli(argv)
        assert caught.value.code == 2, argv
        assert "usage: reconciler" in capsys.readouterr().err, argv
