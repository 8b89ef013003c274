"""Which settings a run of the command line gets (cli.invocation): the config file named by
--config, else $RECONCILER_CONFIG, else ./reconciler.toml, else defaults; flags beat the file;
relative paths in a file resolve against its directory, and a flag not given leaves the file's
value. The file is read at once, validated only when a command first asks for the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.cli.invocation import Invocation
from reconciler.errors import ConfigError
from tests.support import write_config
from tests.support.cli_world import DOMAIN, CliWorld


def test_config_file_values_are_used(world: CliWorld) -> None:
    world.declare()
    state = world.tmp / "from-config"
    config = write_config(world.tmp / "conf" / "reconciler.toml", repo=world.decl, state=state)
    rc, out, err = world.run("--config", str(config), "reconcile")
    assert rc == 0, (out, err)
    assert (state / "reconciler.db").is_file()
    assert len(world.releases()) == 1
    assert not (Path.cwd() / "state").exists()


def test_flags_override_the_config_file(world: CliWorld) -> None:
    world.declare()
    in_file = world.tmp / "state-in-file"
    on_flag = world.tmp / "state-on-flag"
    config = write_config(world.tmp / "conf" / "reconciler.toml", repo=world.tmp / "wrong-repo", state=in_file)
    rc, out, err = world.run(
        "--config", str(config), "--repo", str(world.decl), "--state-dir", str(on_flag), "reconcile"
    )
    assert rc == 0, (out, err)
    assert (on_flag / "reconciler.db").is_file()
    assert not in_file.exists()


def test_reconciler_config_env_is_used_when_no_config_flag(world: CliWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    world.declare()
    state = world.tmp / "env-state"
    config = write_config(world.tmp / "env" / "reconciler.toml", repo=world.decl, state=state)
    monkeypatch.setenv("RECONCILER_CONFIG", str(config))
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (state / "reconciler.db").is_file()
    assert len(world.releases()) == 1

    # --config beats $RECONCILER_CONFIG.
    other_state = world.tmp / "flag-state"
    flag_config = write_config(world.tmp / "flag" / "reconciler.toml", repo=world.decl, state=other_state)
    rc, out, err = world.run("--config", str(flag_config), "status")
    assert rc == 0, (out, err)
    # status only looks (it creates no state): it says which config and state it used.
    assert f"no state database at {other_state / 'reconciler.db'} (config {flag_config})" in err, err
    assert not other_state.exists()

    # A bad config named by the environment is a bad config.
    write_config(config, concurrency=0)
    rc, out, err = world.run("reconcile")
    assert rc == 2, (out, err)


def test_relative_paths_in_a_config_file_resolve_against_its_directory(world: CliWorld) -> None:
    world.declare()
    conf_dir = world.tmp / "etc" / "reconciler"
    config = write_config(conf_dir / "reconciler.toml", repo="../../decl", state="var/state")
    elsewhere = world.tmp / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)  # the fixture's monkeypatch.chdir restores the cwd
    rc, out, err = world.run("--config", str(config), "reconcile")
    assert rc == 0, (out, err)
    assert (conf_dir / "var" / "state" / "reconciler.db").is_file()
    assert not (elsewhere / "var").exists()
    assert len(world.releases()) == 1


def test_reconciler_toml_in_the_current_directory_is_used(world: CliWorld) -> None:
    world.declare()
    here = world.tmp / "here"
    write_config(here / "reconciler.toml", repo=world.decl, state="st")
    os.chdir(here)
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (here / "st" / "reconciler.db").is_file()


def test_defaults_repo_is_cwd_and_state_is_dot_state(world: CliWorld) -> None:
    world.declare()
    os.chdir(world.decl)
    rc, out, err = world.run("reconcile")
    # No configuration: a local site is refused (allow_local defaults to false), reported, untouched.
    assert rc == 1, (out, err)
    assert f"{DOMAIN}: Invalid/Unknown" in out and "allow_local = true" in out, out
    assert (world.decl / "state" / "reconciler.db").is_file()
    assert world.releases() == []
    (world.tmp / "cwd" / "reconciler.toml").unlink(missing_ok=True)
    write_config(world.decl / "reconciler.toml", interval=None)  # ./reconciler.toml: allow_local = true
    rc, out, err = world.run("reconcile")
    assert rc == 0, (out, err)
    assert (world.decl / "state" / "reconciler.db").is_file()
    assert len(world.releases()) == 1


def test_the_settings_are_validated_on_first_use_only(tmp_path: Path) -> None:
    config = write_config(tmp_path / "reconciler.toml", concurrency=0)
    invocation = Invocation(str(config), {"repo": None, "state_dir": None, "shard": None})
    assert invocation.path == config and invocation.raw["concurrency"] == 0
    with pytest.raises(ConfigError, match=str(config)):
        invocation.settings  # noqa: B018 - the property validates


def test_an_absent_flag_leaves_the_file_s_value(tmp_path: Path) -> None:
    config = write_config(tmp_path / "conf" / "reconciler.toml", state="from-file")
    invocation = Invocation(str(config), {"repo": None, "state_dir": None, "shard": "2/3"})
    assert invocation.settings.state_dir == tmp_path / "conf" / "from-file"
    assert invocation.settings.shard == "2/3"
    assert invocation.looks().state_dir == str(tmp_path / "conf" / "from-file")
