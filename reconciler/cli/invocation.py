"""One run of the command line: the config file it read and the settings every command gets,
and the one signature of a command's handler."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.engine.memo import Looks, Memo, settings_key
from reconciler.errors import ConfigError
from reconciler.settings_file import DEFAULT_STATE_DIR, config_file, read_settings_file

if TYPE_CHECKING:
    from reconciler.config import Settings


class Invocation:
    """This run's settings: the config file read at once, validated (pydantic) on first use.
    The look-only commands ask for `looks()` instead, which a config validated before answers
    from the memo without validating again."""

    def __init__(self, config: str | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        # The config file read (None: defaults and flags only), named when a command finds no
        # state database: a CLI run outside the service's setup must say what it looked at.
        self.path = config_file(config)
        self.raw = read_settings_file(self.path, overrides)
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            # Here, not at the top: importing pydantic is what the look-only commands avoid.
            from reconciler.config import validate_settings

            self._settings = validate_settings(self.raw, self.path)
        return self._settings

    def state_dir(self) -> Path:
        """The state directory of a command that records (and of the daemon), created owner-only
        when missing. One that cannot be created or written is a ConfigError naming it and the
        fix, checked before anything runs: under systemd `StateDirectory=` makes it, without
        systemd nobody does, and the service user cannot create it under a root-owned /var/lib."""
        path = self.settings.state_dir
        try:
            if not path.exists():
                path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"state_dir {path} does not exist and cannot be created ({exc.strerror}): "
                              f"{_STATE_DIR_FIX.format(path=path)}") from exc
        if not path.is_dir() or not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"state_dir {path} is not a directory this user can write: "
                              f"{_STATE_DIR_FIX.format(path=path)}")
        return path

    def looks(self) -> Looks:
        key = settings_key(self.raw)
        state_dir = self.raw.get("state_dir", DEFAULT_STATE_DIR)
        memo = Memo(state_dir) if key is not None and isinstance(state_dir, Path) else None
        if memo is not None and key is not None and (found := memo.looks(key)) is not None:
            return found
        looks = Looks.of(self.settings)
        # Remembered only beside a state database: looking never creates a state directory.
        if memo is not None and key is not None and looks.db_path.exists() and Path(looks.state_dir) == state_dir:
            memo.remember_settings(key, looks)
        return looks


_STATE_DIR_FIX = ("create it for the user that runs reconciler, e.g. install -d -o reconciler -g reconciler "
                  "-m 0700 {path} (the systemd unit's StateDirectory= does this), or set state_dir")


# What every command module's `handle` is: the run's settings and its parsed arguments in,
# the exit status out (SPEC section 5).
Handler = Callable[[Invocation, argparse.Namespace], int]
