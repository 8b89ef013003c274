"""reconciler.settings_file: which reconciler.toml is in use (`--config`, else $RECONCILER_CONFIG,
else ./reconciler.toml, else none), how it is read (relative paths against the file's folder, flags
over the file and never re-rooted, whole seconds as floats, an unreadable or broken file a
ConfigError naming it), and what counts as a repository URL. The credential rules of
`url_credentials` are proven end to end in tests/hostile/test_url_credentials.py; here only that
its answer never quotes the URL and that local paths are never judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.errors import ConfigError
from reconciler.settings_file import config_file, is_url, read_settings_file, url_credentials


def test_the_config_flag_beats_the_environment_which_beats_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    assert config_file() is None  # nothing anywhere: defaults and flags only
    (tmp_path / "reconciler.toml").write_text("")
    assert config_file() == Path("reconciler.toml")
    monkeypatch.setenv("RECONCILER_CONFIG", "/etc/reconciler/env.toml")
    assert config_file() == Path("/etc/reconciler/env.toml")
    assert config_file("flag.toml") == Path("flag.toml")


def test_a_directory_named_reconciler_toml_is_not_a_config_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_CONFIG", "")  # set but empty counts as unset
    (tmp_path / "reconciler.toml").mkdir()
    assert config_file() is None


def test_relative_paths_in_the_file_are_relative_to_the_file(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "etc" / "reconciler.toml"
    config.parent.mkdir()
    config.write_text('repo = "decl"\nstate_dir = "/var/lib/reconciler"\nidentity_file = "~/.ssh/id"\n'
                      'known_hosts = "../known"\nbranch = "prod"\n')
    raw = read_settings_file(config, {})
    assert raw["repo"] == tmp_path / "etc" / "decl"
    assert raw["state_dir"] == Path("/var/lib/reconciler")
    assert raw["identity_file"] == tmp_path / "home" / ".ssh" / "id"
    assert raw["known_hosts"] == tmp_path / "etc" / ".." / "known"
    assert raw["branch"] == "prod"  # not a path key: left as written


def test_flags_override_the_file_and_stay_relative_to_the_working_directory(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "reconciler.toml"
    config.parent.mkdir()
    config.write_text('state_dir = "in-file"\nconcurrency = 4\nbranch = "prod"\n')
    raw = read_settings_file(config, {"state_dir": "on-flag", "concurrency": None, "branch": "main"})
    assert raw["state_dir"] == Path("on-flag")  # a flag's relative path is the operator's, not the file's
    assert raw["concurrency"] == 4              # a flag not given (None) leaves the file's value
    assert raw["branch"] == "main"


def test_a_repository_url_is_kept_as_text_and_whole_seconds_become_floats(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.toml"
    config.write_text('repo = "git@git.example.com:ops/decl.git"\ninterval = 30\ncommand_timeout = 60\n'
                      "deploy_timeout = 900\nconnect_timeout = 5\nrepo_interval = 10\nconcurrency = 3\n")
    raw = read_settings_file(config, {})
    assert raw["repo"] == "git@git.example.com:ops/decl.git"
    for key in ("interval", "command_timeout", "deploy_timeout", "connect_timeout", "repo_interval"):
        assert type(raw[key]) is float, key
    assert type(raw["concurrency"]) is int


def test_no_file_gives_the_flags_alone(tmp_path: Path) -> None:
    assert read_settings_file(None, {"repo": "decl", "interval": 5, "shard": None}) == \
        {"repo": Path("decl"), "interval": 5.0}


@pytest.mark.parametrize(("content", "says"), [
    (None, "cannot read config"),
    ("concurrency = = 2\n", "line 1"),
])
def test_a_missing_or_broken_file_is_a_config_error_naming_it(tmp_path: Path, content: str | None,
                                                              says: str) -> None:
    config = tmp_path / "reconciler.toml"
    if content is not None:
        config.write_text(content)
    with pytest.raises(ConfigError) as caught:
        read_settings_file(config, {})
    assert str(caught.value).startswith(f"{config}: ") and says in str(caught.value)


@pytest.mark.parametrize(("value", "url"), [
    ("ssh://git@host/decl.git", True),
    ("https://host/decl.git", True),
    ("file:///srv/decl.git", True),
    ("git@host:ops/decl.git", True),
    ("deploy:secret@host:decl.git", True),  # a password makes it no less a URL
    ("/srv/git/decl.git", False),
    ("decl", False),
    ("./a@b:c", False),
    ("C:decl", False),
])
def test_is_url_tells_urls_from_local_paths(value: str, url: bool) -> None:
    assert is_url(value) is url


@pytest.mark.parametrize("value", [
    "https://tok3n-Secret@127.0.0.1/decl.git",
    "persistent-https::https://tok3n-Secret@127.0.0.1/decl.git",
    "ssh://git:tok3n-Secret@127.0.0.1/decl.git",
    "git%3Atok3n-Secret@127.0.0.1:decl.git",
])
def test_the_reason_for_refusing_a_url_never_quotes_it(value: str) -> None:
    why = url_credentials(value)
    assert why is not None and "tok3n" not in why and "127.0.0.1" not in why


@pytest.mark.parametrize("value", ["/srv/git/decl.git", "dir/user:pw@host:x", "git@127.0.0.1:decl.git",
                                   "https://127.0.0.1/a@b.git"])
def test_local_paths_login_names_and_an_at_in_the_path_hold_no_credentials(value: str) -> None:
    assert url_credentials(value) is None
