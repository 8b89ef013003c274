"""The exception tree. The type of an error decides whether it is retried
(`engine.outcome.outcome_of` is the one place that reads it).

    ReconcilerError          base of every error this package raises on purpose
    ├── ConfigError          bad daemon settings: fix the config, nothing ran
    ├── DeclarationError     a repository or branch that cannot be read
    ├── UnknownSite          a command names a site that is not declared (or not valid)
    ├── NoRollbackTarget     `rollback` has no release to go back to (or not the one asked for)
    ├── NotApplicable        `retry`/`redeploy` asked of a site where it means nothing (pinned, no failure)
    ├── PinConflict          the branch moved while a pin was committed: nothing committed, run it again
    │   └── PushRejected     the branch moved on the declarations' Git host: nothing pushed
    ├── SigningError         under require_signed, a pin cannot be signed (no key, or signing failed)
    │   └── UnverifiedTip    ... because the branch tip it would sit on is not verified
    ├── TemporaryError       retry with backoff: the world may heal by itself
    │   ├── TransportError   server unreachable, connection lost, timeout
    │   ├── RepoUnreachable  the declarations' Git host cannot be reached: the last fetch stays in force
    │   └── SiteLocked       another reconciler holds the site's lock: look again shortly
    └── PermanentError       wait for a new commit or declaration change
        ├── StepFailed       a remote step exited non-zero (carries command, status, output)
        ├── LayoutConflict   the server holds something we must not touch
        └── LockNotReleased  the work is done but our lock on the site could not be removed
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(ReconcilerError):
    """Raised when reconciler.toml or a flag is invalid; nothing has run yet."""


class DeclarationError(ReconcilerError):
    """Raised when the declarations repository, branch or commit cannot be read."""


class UnknownSite(ReconcilerError):
    """Raised when a command names a domain with no valid declaration in the applied commit."""


class NoRollbackTarget(ReconcilerError):
    """Raised by `rollback` when no eligible release exists, or the one asked for is not one."""


class NotApplicable(ReconcilerError):
    """Raised by `retry` when the site has no remembered failure, and by `redeploy` when it is
    pinned (a pin holds a built release: there is nothing to build)."""


class PinConflict(ReconcilerError):
    """Raised by `rollback`/`unpin` when another commit landed on the branch between reading its
    tip and committing the pin: git refuses the stale parent, so nothing was lost or committed."""


class SigningError(ReconcilerError):
    """Raised by `rollback`/`unpin` under `require_signed` when the pin commit cannot be signed by a
    key the daemon trusts: nothing is committed (an unsigned pin would never be applied)."""


class UnverifiedTip(SigningError):
    """Raised by `rollback`/`unpin` under `require_signed` when the branch tip the pin would be
    committed on is not the verified commit the reconciler applies (unsigned, signed by another key,
    or not descending from the last verified commit): signing on it would vouch for it. Nothing is
    committed."""


class PushRejected(PinConflict):
    """Raised when a pin commit cannot be pushed because the branch moved on the Git host since
    the last fetch: nothing was pushed (the caller fetches and tries again)."""


class TemporaryError(ReconcilerError):
    """Raised when retrying later may succeed; `delay` is the shortest sensible wait, if known."""

    def __init__(self, message: str, *, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class TransportError(TemporaryError):
    """Raised by a transport when the server cannot be reached, the connection drops or a
    command does not finish within its timeout. A non-zero exit is a result, not this."""


class SiteLocked(TemporaryError):
    """Raised when another reconciler (or a live run of this one) holds the site's lock."""


class PermanentError(ReconcilerError):
    """Raised when retrying the same thing cannot help: wait for a change."""


class StepFailed(PermanentError):
    """Raised when a remote step exits non-zero. Fields are kept as data so the store can
    record them."""

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
    """Raised when the server holds something in the way that we must never replace
    (a real directory or file where the site symlink belongs)."""


class LockNotReleased(PermanentError):
    """Raised when leaving a site's lock: the work inside succeeded, but the lock directory is
    ours and could not be removed, so the site stays locked until someone fixes it."""


class RepoUnreachable(TemporaryError):
    """Raised when the declarations' Git host cannot be reached (fetch or push); the last
    fetched commit stays in force."""
