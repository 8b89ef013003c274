"""reconciler.toml found and read into the mapping `config.Settings` validates: which file is in
use, TOML decoding, relative paths, flags over file values.

Apart from `config` because it needs no pydantic: the look-only commands (`status`, `history`,
`logs`) read the file and, when its exact contents were validated before (`cli.memo`), skip
the validation and its imports.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from reconciler.errors import ConfigError

DEFAULT_STATE_DIR = Path("state")

_PATH_KEYS = ("repo", "state_dir", "identity_file", "known_hosts", "ssh_config", "allowed_signers", "gpg_home",
              "signing_key", "repo_identity_file", "repo_token_file")


_SCP_LIKE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^/].*|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:/.*")


def is_url(value: str) -> bool:
    """A repository named by URL (`ssh://`, `https://`, `file://`, scp-like `git@host:path`),
    not a local path."""
    return "://" in value or bool(_SCP_LIKE.fullmatch(value))


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
