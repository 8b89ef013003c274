"""Health checks: what a site's `[health]` table asks, validated like every other key. Pure.
(`remote/health.py` runs checks and is the one strict reader of their answers.)

A check runs ON the server (remote/protocol/checking.py `health`), so it reaches private networks and the
site's own web server: either `url`, fetched with curl and the site's domain as the Host header,
or `command`, run in the live release (code by design, like `script`). It is tried `retries + 1`
times, `interval` seconds apart, after waiting `grace` seconds.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS_RE = re.compile(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?")
MAX_COMMAND = 4096   # a health command is a line or two; it travels as one argument
MAX_TOTAL_SECONDS = 600.0  # grace + every try: a check must end well inside a pass


class HealthCheck(BaseModel):
    """A site's `[health]` table."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str | None = Field(
        default=None, description='An http:// or https:// URL fetched on the server with '
        "curl, the site's domain as Host. Exactly one of url, command.")
    command: str | None = Field(
        default=None, description='Shell code run in the live release; exit 0 is healthy. Exactly one of url, command.')
    status: str = Field(
        default="200-399",
        description='The HTTP status or range that counts as healthy, e.g. "200" or "200-399" (url checks).')
    contains: str | None = Field(
        default=None,
        description='Text the response body must contain (url checks only; one line, at most 1024 characters).')
    timeout: float = Field(default=5.0, description='Seconds one try may take, in (0, 120].')
    retries: int = Field(default=2, description='Tries after the first, 0 to 20.')
    interval: float = Field(default=0.5, description='Seconds between tries, 0 to 60.')
    grace: float = Field(
        default=0.0, description='Seconds to wait before the first try, 0 to 300. '
        'grace + tries x (timeout + interval) stays under 600.')

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.fullmatch(r"https?://[^\s/?#@]+(?:[/?#]\S*)?", value) or _CONTROL.search(value):
            raise ValueError("must be an http:// or https:// URL without spaces or credentials")
        return value

    @field_validator("command")
    @classmethod
    def _command(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\x00" in value or len(value) > MAX_COMMAND):
            raise ValueError(f"must be non-empty shell code of at most {MAX_COMMAND} characters, no NUL")
        return value

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        match = _STATUS_RE.fullmatch(value)
        if match is None or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ValueError('must be an HTTP status code or a range, e.g. "200" or "200-399"')
        return value

    @field_validator("contains")
    @classmethod
    def _contains(cls, value: str | None) -> str | None:
        if value is not None and (not value or _CONTROL.search(value) or len(value) > 1024):
            raise ValueError("must be a non-empty line of at most 1024 characters")
        return value

    @field_validator("timeout", "interval", "grace", mode="before")
    @classmethod
    def _seconds(cls, value: object) -> object:
        # TOML writes 5 and 5.0 differently; both are seconds.
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        if (self.url is None) == (self.command is None):
            raise ValueError("needs exactly one of url or command")
        if self.command is not None and self.contains is not None:
            raise ValueError("contains applies to url checks only")
        if not 0 < self.timeout <= 120 or not 0 <= self.interval <= 60 or not 0 <= self.grace <= 300:
            raise ValueError("timeout must be in (0, 120], interval in [0, 60], grace in [0, 300] seconds")
        if not 0 <= self.retries <= 20:
            raise ValueError("retries must be between 0 and 20")
        if self.deadline > MAX_TOTAL_SECONDS:
            raise ValueError(f"grace + tries x (timeout + interval) must stay under {MAX_TOTAL_SECONDS:.0f} s")
        return self

    @property
    def status_range(self) -> tuple[int, int]:
        low, _, high = self.status.partition("-")
        return int(low), int(high or low)

    @property
    def deadline(self) -> float:
        """The longest a run of this check can take on the server."""
        return self.grace + (self.retries + 1) * (self.timeout + self.interval)
