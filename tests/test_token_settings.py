"""Named API tokens (`[[api_token]]`): read from reconciler.toml tables, a SHA-256 or an
owner-only file; a bad entry, a file open to others, a duplicate name or a token file that became
unreadable is a configuration error naming the entry, never quoting the token. Real files, the
real settings loader."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import load_settings, validate_settings
from reconciler.errors import ConfigError
from reconciler.token_settings import token_digest


def test_a_token_is_compared_as_its_sha256() -> None:
    assert token_digest("alice-token") == hashlib.sha256(b"alice-token").digest()


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


