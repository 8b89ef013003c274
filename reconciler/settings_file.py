"""reconciler.toml found and read into the mapping `config.Settings` validates: which file is in
use, TOML decoding, relative paths, flags over file values.

Apart from `config` because it needs no pydantic: the look-only commands (`status`, `history`,
`logs`) read the file and, when its exact contents were validated before (`engine.memo`), skip
the validation and its imports.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError

DEFAULT_STATE_DIR = Path("state")

_PATH_KEYS = ("repo", "state_dir", "identity_file", "known_hosts", "ssh_config", "allowed_signers", "gpg_home",
              "signing_key", "repo_identity_file", "repo_token_file", "age_identity_file")


# `user[:password]@host:path`: a password makes it no less a URL (it is refused as one, by
# `url_credentials`, instead of being taken for a relative path and shown in messages).
_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+(?::[^/]*)?@[A-Za-z0-9.-]+:.+")


def is_url(value: str) -> bool:
    """A repository named by URL (`ssh://`, `https://`, `file://`, scp-like `git@host:path`),
    not a local path."""
    return "://" in value or bool(_SCP_LIKE.fullmatch(value))


# Credentials in a repository URL leak: every git and ssh given the URL
# shows it in its argv to any local user (`ps`), a clone keeps it in .git/config (0644), the release
# manifest records it, and status messages, the dashboard and notifications print it. So no
# repository URL may hold one; the credential goes where nothing prints it (an SSH key, a
# credential helper, `repo_token_file`).
# What counts, by transport:
# - SSH (`ssh://`, `git+ssh://`, `ssh+git://`, scp-like `user@host:path`): the part before '@' is a
#   login name (`git@github.com:acme/shop.git`), which ssh shows anyway and is no secret. A password
#   (`user:password@`, also percent-encoded) is refused: ssh never takes one from the URL anyway.
# - Every other transport (https, http, ftp(s), git, file, a `helper::` address): any user
#   information at all. GitHub and GitLab take a bare token as the user name
#   (`https://ghp_...@github.com/...`), so a user name alone can be the secret.
# Written as git reads a repository argument (transport.c, connect.c): a `helper::` prefix, then
# `scheme://`, else scp-like when a ':' comes before any '/', else a local path.
_HELPERS = re.compile(r"(?:[A-Za-z0-9+.-]*::)+")  # `helper::address`, however many: the address is checked
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")


def url_credentials(value: str) -> str | None:
    """Why the repository URL `value` holds credentials, or None (a local path never does).
    The answer names the form only, never any part of `value`: it is printed."""
    if helpers := _HELPERS.match(value):
        value = value[helpers.end():]
    if scheme := _SCHEME.match(value):
        ssh = scheme.group(1).lower() in _SSH_SCHEMES
        authority = re.split(r"[/?#]", value[scheme.end():], maxsplit=1)[0]
    else:
        authority = value.split("/", 1)[0]
        if ":" not in authority:
            return None  # a local path
        ssh = True  # scp-like [user@]host:path
    user, at, _ = authority.partition("@")
    if not at:
        return None
    if not ssh:
        return "a user name or token before '@' (over any transport but SSH, a user name alone can be a token)"
    if ":" in urllib.parse.unquote(user):
        return "a password (user:password@)"
    return None


def config_file(config: str | Path | None = None) -> Path | None:
    """Which config file is in use: `--config`, else $RECONCILER_CONFIG, else ./reconciler.toml
    if present, else none (defaults and flags only)."""
    if config is not None:
        return Path(config)
    if os.environ.get("RECONCILER_CONFIG"):
        return Path(os.environ["RECONCILER_CONFIG"])
    if Path("reconciler.toml").is_file():
        return Path("reconciler.toml")
    return None


def read_settings_file(path: Path | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """The settings in `path` (None: no file) with non-None `overrides` on top, paths as Path
    (relative ones in the file resolved against its directory), whole seconds as floats."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    raw.update({key: value for key, value in overrides.items() if value is not None})
    for key in _PATH_KEYS:
        if key == "repo" and isinstance(raw.get(key), str) and is_url(raw[key]):
            continue  # a URL, not a path
        if isinstance(raw.get(key), str):
            value = Path(raw[key]).expanduser()
            # Relative paths in a config file are relative to that file, as operators expect.
            if path is not None and overrides.get(key) is None and not value.is_absolute():
                value = path.parent / value
            raw[key] = value
    if isinstance(raw.get("interval"), int):
        raw["interval"] = float(raw["interval"])
    for key in ("command_timeout", "deploy_timeout", "connect_timeout", "repo_interval"):
        if isinstance(raw.get(key), int):
            raw[key] = float(raw[key])
    return raw


SHARD_SYNTAX = re.compile(r"([0-9]{1,6})/([0-9]{1,6})")


def parse_shard(text: str) -> tuple[int, int]:
    """`"i/n"` -> (i, n) with 1 <= i <= n; ValueError saying what is wrong otherwise. The syntax
    is checked here, below config and core alike (no pydantic: `status` reads it too); which
    servers a shard owns is core/shard.py's."""
    match = SHARD_SYNTAX.fullmatch(text)
    if match is None:
        raise ValueError(f'{text!r} is not "i/n": this instance\'s shard i of n, e.g. "2/3"')
    if any(len(part) > 1 and part.startswith("0") for part in match.groups()):
        raise ValueError(f'{text!r}: write the numbers without leading zeros, e.g. "2/3"')
    index, count = int(match.group(1)), int(match.group(2))
    if count == 0:
        raise ValueError(f"{text!r}: there must be at least one shard (n >= 1)")
    if not 1 <= index <= count:
        raise ValueError(f"{text!r}: shards are numbered 1 to {count}, so i must be 1..{count}")
    return index, count
