"""reconciler.config: the daemon's settings as validated, immutable values. Numbers and seconds in
range, `git_timeout` leaving the probe's sites time, `listen` as host:port, signed state only with
something to verify against, a repository as a local path or a URL that git can never take for an
option; the paths derived from `state_dir`; and every mistake a ConfigError naming the file and the
key. (Notification URLs and events: tests/service/test_announce.py and tests/core/test_reasons.py;
trusted proxies: tests/service/http/test_throttle.py; the shard: tests/core/test_shard.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.config import Settings, load_settings, validate_settings
from reconciler.errors import ConfigError


def test_defaults_need_no_file_and_derive_their_paths_from_state_dir() -> None:
    settings = Settings()
    assert settings.repo == Path(".") and settings.repo_url is None and settings.local_repo == Path(".")
    assert settings.db_path == Path("state") / "reconciler.db"
    assert settings.log_dir == Path("state") / "logs"
    assert (settings.require_signed, settings.allow_local, settings.listen) == ("off", False, None)


def test_a_repository_url_is_mirrored_under_state_dir() -> None:
    settings = Settings.model_validate({"repo": "ssh://git@127.0.0.1/ops/decl.git", "state_dir": Path("/srv/st")})
    assert settings.repo_url == "ssh://git@127.0.0.1/ops/decl.git"
    assert settings.local_repo == Path("/srv/st/declarations.git")
    local = Settings.model_validate({"repo": "/srv/decl"})
    assert local.repo == Path("/srv/decl") and local.repo_url is None and local.local_repo == Path("/srv/decl")


@pytest.mark.parametrize("repo", ["-uhttps://127.0.0.1/x.git", "https://127.0.0.1/a b.git", "ssh://h/x\n.git",
                                  "git@127.0.0.1:x.git\t"])
def test_a_repository_url_that_git_could_misread_is_refused(repo: str) -> None:
    with pytest.raises(ValidationError, match="must not start with '-' or hold whitespace"):
        Settings.model_validate({"repo": repo})


@pytest.mark.parametrize(("raw", "key", "says"), [
    ({"concurrency": 0}, "concurrency", "at least 1"),
    ({"interval": 0.0}, "interval", "must be positive"),
    ({"deploy_timeout": -1.0}, "deploy_timeout", "must be positive"),
    ({"repo_interval": 0.0}, "repo_interval", "must be positive"),
    ({"listen": "9180"}, "listen", '"host:port"'),
    ({"listen": "127.0.0.1:0"}, "listen", '"host:port"'),
    ({"listen": "127.0.0.1:65536"}, "listen", '"host:port"'),
    ({"require_signed": "always"}, "require_signed", "'off' or 'head'"),
    ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ({"concurrency": "8"}, "concurrency", "valid integer"),  # strict: TOML's types, never coerced
    ({"retention_days": 0}, "retention_days", "at least 1"),
    ({"retention_days": 1.5}, "retention_days", "valid integer"),
])
def test_a_bad_setting_is_a_config_error_naming_the_file_and_key(tmp_path: Path, raw: dict[str, Any], key: str,
                                                                   says: str) -> None:
    path = tmp_path / "reconciler.toml"
    with pytest.raises(ConfigError) as caught:
        validate_settings(raw, path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ") and says in message, message
    assert "Value error" not in message, "pydantic's prefix is no part of our message"


def test_every_mistake_is_reported_at_once_and_without_a_file_as_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        validate_settings({"concurrency": 0, "interval": -1.0}, None)
    message = str(caught.value)
    assert message.startswith("settings: ") and message.count("; ") == 1
    assert "interval: " in message and "concurrency: " in message


@pytest.mark.parametrize(("git_timeout", "valid"), [(None, True), (30.0, True), (30.5, False), (0.0, False),
                                                    (-1.0, False)])
def test_git_timeout_is_at_most_half_of_command_timeout(git_timeout: float | None, valid: bool) -> None:
    raw = {"command_timeout": 60.0, "git_timeout": git_timeout}
    if valid:
        assert Settings.model_validate(raw).git_timeout == git_timeout
    else:
        with pytest.raises(ValidationError, match=r"at most half of command_timeout \(60\)"):
            Settings.model_validate(raw)


@pytest.mark.parametrize(("trust", "valid"), [({}, False), ({"allowed_signers": Path("/k")}, True),
                                              ({"gpg_home": Path("/g")}, True)])
def test_signed_state_needs_signers_or_a_gpg_home(trust: dict[str, Path], valid: bool) -> None:
    raw = {"require_signed": "head", **trust}
    if valid:
        assert Settings.model_validate(raw).require_signed == "head"
    else:
        with pytest.raises(ValidationError, match="needs allowed_signers and/or gpg_home"):
            Settings.model_validate(raw)


def test_load_settings_reads_the_file_applies_flags_and_returns_frozen_settings(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "reconciler.toml"
    config.parent.mkdir()
    config.write_text('repo = "decl"\ninterval = 30\nconcurrency = 2\nlisten = "127.0.0.1:9180"\n')
    settings = load_settings(config, concurrency=5, state_dir=None)
    assert settings.repo == tmp_path / "conf" / "decl"
    assert settings.interval == 30.0 and settings.concurrency == 5
    assert settings.listen == "127.0.0.1:9180" and settings.state_dir == Path("state")
    with pytest.raises(ValidationError):
        settings.concurrency = 1


def test_history_is_kept_for_ever_unless_retention_days_is_set() -> None:
    assert Settings().retention_days is None
    assert Settings.model_validate({"retention_days": 90}).retention_days == 90


def test_deploy_windows_are_read_from_window_tables(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.toml"
    path.write_text('[[window]]\nkind = "allow"\ndays = ["mon-fri"]\nhours = "09:00-17:00"\n'
                    'timezone = "Europe/Berlin"\nsites = ["*.example.com"]\n\n'
                    '[[window]]\nkind = "deny"\nsites = ["*"]\npins = "hold"\n')
    allow, deny = load_settings(path).window
    assert (allow.kind, allow.weekdays, allow.minutes, allow.timezone) == ("allow", frozenset(range(5)), (540, 1020),
                                                                           "Europe/Berlin")
    assert (deny.kind, deny.pins, deny.sites) == ("deny", "hold", ["*"])
    assert Settings().window == []


def test_a_bad_deploy_window_is_a_config_error_naming_the_entry_and_key(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.toml"
    path.write_text('[[window]]\nkind = "deny"\nsites = ["*"]\n\n'
                    '[[window]]\nkind = "deny"\nhours = "22:00-30:00"\ntimezone = "Nowhere/City"\nsites = []\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    text = str(raised.value)
    assert text.startswith(f"{path}: ")
    assert "window.1.hours: '22:00-30:00' is not an hour range" in text
    assert "window.1.timezone: 'Nowhere/City' is not a known time zone" in text
    assert "window.1.sites: must name at least one site" in text and "window.0" not in text
