"""Named API tokens (`[[api_token]]` in reconciler.toml): each names who acts with it (history,
pin commits), and the token itself is never in the file: its SHA-256, or an owner-only file that
holds it. Tokens, configured or presented, are compared as SHA-256 digests (`token_digest`)."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.errors import ConfigError

# A token's name is who acts (history's `requested_by`, a pin commit's author name): one line a
# person can read, nothing that breaks "Name <email>".
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@+-]{0,63}")


class ApiToken(BaseModel):
    """An `[[api_token]]` entry: a named token, so that what is done with it names who did it.
    The token itself is never in reconciler.toml: either its SHA-256 (`sha256 = "<64 hex>"`,
    e.g. `printf %s "$TOKEN" | sha256sum`) or a file holding it (`token_file`, owner-only, read
    by the HTTP endpoint: a CLI user who may not read it still validates the config)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)

    name: str = Field(
        description='Who acts with this token (history, pin commits): 1-64 letters, digits, spaces and ._@+-.')
    sha256: str | None = Field(
        default=None, description="The token's SHA-256 as 64 hex digits. Exactly one of sha256 and token_file.")
    token_file: Annotated[Path | None, Field(strict=False, validation_alias=AliasChoices("token_file", "file"),
                                           description="A file holding the token: absolute, mode 600.")] = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOKEN_NAME.fullmatch(value) or value != value.strip():
            raise ValueError(f"{value[:70]!r} is not a token name: 1-64 letters, digits, spaces and ._@+- "
                             "(it names who acted, in history and in pin commits)")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("must be the 64 hex digits of the token's SHA-256 (printf %s TOKEN | sha256sum)")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _one_source(self) -> ApiToken:
        if (self.sha256 is None) == (self.token_file is None):
            raise ValueError(f"api_token {self.name!r}: give exactly one of sha256 and token_file")
        if self.token_file is not None and (problem := token_file_problem(self.token_file)) is not None:
            raise ValueError(f"api_token {self.name!r}: {problem}")
        return self

    def digest(self) -> bytes:
        """The SHA-256 of the token (read from `token_file` now). ConfigError when it cannot be."""
        if self.sha256 is not None:
            return bytes.fromhex(self.sha256)
        assert self.token_file is not None
        if (problem := token_file_problem(self.token_file)) is not None:
            raise ConfigError(f"api_token {self.name!r}: {problem}")
        try:
            token = self.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"api_token {self.name!r}: cannot read {self.token_file}: {exc}") from exc
        if not token:
            raise ConfigError(f"api_token {self.name!r}: {self.token_file} is empty")
        return token_digest(token)


def token_digest(token: str) -> bytes:
    """What a token is compared as: its SHA-256 (every token, configured or presented, the same way)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def token_file_problem(path: Path) -> str | None:
    """Why `path` cannot hold a token, or None: it must be absolute, a regular file, and readable
    by its owner only (a token other users can read is anyone's)."""
    if not path.is_absolute():
        return f"token_file {path} must be an absolute path"
    try:
        info = path.stat()
    except OSError as exc:
        return f"token_file {path}: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return f"token_file {path} is not a regular file"
    if info.st_mode & 0o077:
        return (f"token_file {path} is open to group or others (mode {stat.S_IMODE(info.st_mode):04o}): "
                "chmod 600 it, owned by the reconciler's user")
    return None
