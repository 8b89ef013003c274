"""reconciler.config: the daemon's settings as validated, immutable values. Numbers and seconds in
range, `git_timeout` leaving the probe's sites time, `listen` as host:port, signed state only with
something to verify against, a repository as a local path or a URL that git can never take for an
option; the paths derived from `state_dir`; and every mistake a ConfigError naming the file and the
key. (Notification URLs and events: tests/service/test_announce.py and tests/core/test_reasons.py;
trusted proxies: tests/service/http/test_throttle.py; the shard: tests/core/test_shard.py.)"""

from __future__ import annotations

import hashlib
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


# --- named API tokens ---------------------------------------------------------------------------------


def _token_file(tmp_path: Path, mode: int, text: str = "bob-token-0123456789\n") -> Path:
    path = tmp_path / "bob.token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_named_api_tokens_are_read_from_api_token_tables(tmp_path: Path) -> None:
    """`[[api_token]]` tables (a SHA-256, or an owner-only file; `file` is accepted for
    `token_file`) are the named tokens; the single `api_token` form stays valid, named "api"."""
    token_file = _token_file(tmp_path, 0o600)
    alice = hashlib.sha256(b"alice-token").hexdigest().upper()
    config = tmp_path / "reconciler.toml"
    config.write_text(f'[[api_token]]\nname = "alice"\nsha256 = "{alice}"\n\n'
                      f'[[api_token]]\nname = "Bob Ops"\nfile = "{token_file}"\n')
    settings = load_settings(config)
    assert [(t.name, t.digest()) for t in settings.named_tokens] == [
        ("alice", hashlib.sha256(b"alice-token").digest()),
        ("Bob Ops", hashlib.sha256(b"bob-token-0123456789").digest())]
    assert settings.single_token is None
    single = tmp_path / "single.toml"
    single.write_text('api_token = "one-token"\n')
    assert (load_settings(single).single_token, load_settings(single).named_tokens) == ("one-token", [])
    assert load_settings(single).api_token_name == "api"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_a_token_file_open_to_group_or_others_is_a_config_error(tmp_path: Path, mode: int) -> None:
    token_file = _token_file(tmp_path, mode)
    config = tmp_path / "reconciler.toml"
    config.write_text(f'[[api_token]]\nname = "bob"\ntoken_file = "{token_file}"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert f"api_token 'bob': token_file {token_file} is open to group or others (mode {mode:04o})" in message
    assert "chmod 600" in message and "bob-token" not in message, message


@pytest.mark.parametrize(("entry", "why"), [
    ({"name": "x"}, "exactly one of sha256 and token_file"),
    ({"name": "x", "sha256": "ab" * 32, "token_file": "/etc/hostname"}, "exactly one of sha256 and token_file"),
    ({"name": "x", "sha256": "abc"}, "64 hex digits"),
    ({"name": "x", "token_file": "relative.token"}, "must be an absolute path"),
    ({"name": "x", "token_file": "/nonexistent/x.token"}, "No such file"),
    ({"name": "x <y@z>", "sha256": "ab" * 32}, "is not a token name"),
    ({"name": "", "sha256": "ab" * 32}, "is not a token name"),
    ({"name": "x", "sha256": "ab" * 32, "token": "plain"}, "Extra inputs"),
])
def test_a_bad_api_token_entry_is_a_config_error(entry: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        validate_settings({"api_token": [entry]}, None)


def test_token_names_must_differ() -> None:
    entry = {"name": "x", "sha256": "ab" * 32}
    with pytest.raises(ConfigError, match="'x' is used twice"):
        validate_settings({"api_token": [entry, {**entry, "sha256": "cd" * 32}]}, None)
    with pytest.raises(ConfigError, match="is not a token name"):
        validate_settings({"api_token": "t" * 20, "api_token_name": "a <b>"}, None)


def test_a_token_file_that_became_unreadable_is_a_config_error_when_read(tmp_path: Path) -> None:
    token_file = _token_file(tmp_path, 0o600)
    settings = validate_settings({"api_token": [{"name": "bob", "token_file": str(token_file)}]}, None)
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="open to group or others"):
        settings.named_tokens[0].digest()
    token_file.chmod(0o600)
    token_file.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        settings.named_tokens[0].digest()


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
