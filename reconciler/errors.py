"""The exception tree. The type of an error decides whether it is retried.

    ReconcilerError
    ├── ConfigError          bad daemon settings: fix the config, nothing ran
    ├── DeclarationError     a repository or branch that cannot be read
    ├── TemporaryError       retry with backoff: the world may heal by itself
    │   └── TransportError   server unreachable, connection lost, timeout
    └── PermanentError       wait for a new commit or declaration change
        ├── StepFailed       a deploy step exited non-zero (carries command, status, output)
        └── LayoutConflict   the server holds something we must not touch
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ReconcilerError):
    pass


class DeclarationError(ReconcilerError):
    pass


class TemporaryError(ReconcilerError):
    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class TransportError(TemporaryError):
    pass


class PermanentError(ReconcilerError):
    pass


class StepFailed(PermanentError):
    """A remote step failed. Fields are kept as data so the store can record them."""

    def __init__(self, step: str, exit_status: int, output: str = "", detail: str = "") -> None:
        self.step = step
        self.exit_status = exit_status
        self.output = output
        self.detail = detail
        message = f"{step} failed (exit {exit_status})"
        if detail:
            message += f": {detail}"
        super().__init__(message)


class LayoutConflict(PermanentError):
    pass
