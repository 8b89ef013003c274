"""Verified desired state (opt-in, like Flux `verify` / Argo CD `sourceIntegrity`).

With `require_signed = "head"` the tip of the declarations branch is applied only when it
carries a valid signature: an SSH signature (namespace `git`) by a key in `allowed_signers`,
or a GPG signature by a key in the `gpg_home` keyring trusted at least `gpg_min_trust`.
Otherwise the last verified commit stays in force and every site's status says why.
Verification is git's own (`git verify-commit`), so it means what it means to the operators'
git, but only the configured trust roots count: the daemon user's own keyring, git config and
environment never do (GNUPGHOME is `gpg_home` or an empty directory; global and system git
config are ignored).

A valid signature is not enough: the tip must also descend from the last verified commit, or an
older signed commit (a known-vulnerable build) could be put back by anyone who can move the
branch. A deliberate history rewrite is accepted only through `reconciler accept`, which logs it.

Commits the reconciler writes itself (rollback/unpin pins) are signed here with `signing_key`
(SSH) or `gpg_signing_key`; under `require_signed` without either they are refused, because an
unsigned pin would be committed and never applied. And they are only ever signed on verified
ground (`check_ground`): a signed child vouches for its parent's tree, so a pin signed on an
unverified tip would launder whatever someone who can push but not sign put there. The rule is
`choose`'s, the daemon's own, so the two can never disagree about what "verified" means.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reconciler.config import Settings
from reconciler.engine import source
from reconciler.errors import DeclarationError, SigningError, UnverifiedTip

TIMEOUT = 30


@contextmanager
def _environment(settings: Settings) -> Iterator[dict[str, str]]:
    """git's environment with only the configured trust roots: no GIT_* from the caller, no
    global/system git config, and GnuPG pointed at `gpg_home` or a fresh empty directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "GNUPG"))}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    if settings.gpg_home is not None:
        env["GNUPGHOME"] = str(settings.gpg_home)
        yield env
        return
    # Short path under /tmp: gpg-agent's socket path must fit in sun_path.
    with tempfile.TemporaryDirectory(prefix="rgpg-", dir="/tmp") as empty:
        env["GNUPGHOME"] = empty
        try:
            yield env
        finally:
            subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True, check=False, timeout=TIMEOUT)


def _git_config(settings: Settings) -> list[str]:
    signers = str(settings.allowed_signers) if settings.allowed_signers else os.devnull
    return ["-c", f"gpg.ssh.allowedSignersFile={signers}", "-c", f"gpg.minTrustLevel={settings.gpg_min_trust}"]


def verify(repo: Path, commit: str, settings: Settings) -> str | None:
    """None when `commit` is signed by an allowed key, else the reason it is not."""
    command = ["git", "-C", str(repo), *_git_config(settings), "verify-commit", "--raw", commit]
    try:
        with _environment(settings) as env:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run git verify-commit: {exc}"
    if result.returncode == 0:
        return None
    detail = " ".join((result.stderr or result.stdout).split())[:200]
    if "no signature" in detail.lower() or not detail:
        return "is not signed"
    return f"has no valid signature by an allowed key ({detail})"


NO_SIGNER = ('require_signed is on and neither signing_key nor gpg_signing_key is set: a pin committed now '
             'would never be applied; configure one in reconciler.toml or commit a signed pin yourself '
             '(git commit -S)')


def check_signer(settings: Settings) -> None:
    """Raise SigningError, before anything is written, when there is no key to sign with."""
    if settings.signing_key is None and settings.gpg_signing_key is None:
        raise SigningError(NO_SIGNER)


def sign(payload: bytes, settings: Settings) -> str:
    """A detached signature of a commit's content, as git writes it into `gpgsig`."""
    check_signer(settings)
    if settings.signing_key is not None:
        command = ["ssh-keygen", "-Y", "sign", "-n", "git", "-q", "-f", str(settings.signing_key)]
    elif settings.gpg_signing_key is not None:
        command = ["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "",
                   "--detach-sign", "--armor", "--local-user", settings.gpg_signing_key]
    else:
        assert settings.gpg_signing_key is not None
    try:
        with _environment(settings) as env:
            result = subprocess.run(command, input=payload, capture_output=True, env=env, timeout=TIMEOUT,
                                    check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SigningError(f"cannot sign the commit: {exc}") from exc
    if result.returncode != 0 or not result.stdout:
        detail = " ".join(result.stderr.decode(errors="replace").split())[:200]
        raise SigningError(f"cannot sign the commit with {command[0]}: {detail or 'no signature produced'}")
    return result.stdout.decode()


@dataclass(frozen=True)
class Choice:
    """The commit that is desired state, and why (a notice when the tip was not applied)."""

    commit: str
    verified: bool = False  # just verified: remember it as the last verified commit
    notice: str = ""
    problem: str = ""       # what is wrong with the tip when it was not chosen


def choose(settings: Settings, tip: str, last_verified: str | None) -> Choice:
    """Which commit is desired state when the branch is at `tip`: the tip itself, or under
    `require_signed` the tip only when it is signed by a trust root and descends from the last
    verified commit, else the last verified commit. Blocking (git)."""
    if settings.require_signed == "off" or tip == last_verified:
        return Choice(tip)
    repo = settings.local_repo
    problem = verify(repo, tip, settings)
    if problem is None and last_verified is not None and not source.descends(repo, tip, last_verified):
        # A validly signed but older (or rewritten) history: putting back a signed, known-bad
        # build must need the operator, not just someone who can move the branch.
        problem = (f"is signed but does not descend from the last verified commit {last_verified[:12]} "
                   f"(the branch was reset or rewritten; if that was deliberate: reconciler accept {tip[:12]})")
    if problem is None:
        return Choice(tip, verified=True)
    notice = f"declarations commit {tip[:12]} {problem}; not applied"
    if last_verified is None:
        raise DeclarationError(notice + " (no verified commit to fall back to)")
    return Choice(last_verified, notice=f"{notice}; keeping verified {last_verified[:12]}", problem=problem)


def check_ground(settings: Settings, tip: str, last_verified: str | None) -> None:
    """Raise UnverifiedTip unless a commit the reconciler signs may have `tip` as its parent: the
    tip is what `choose` would apply. Building the pin on the last verified commit instead is not
    an option: it would not be a fast-forward of the branch, and pushing it would throw the tip's
    commits away. So the operator is told which commit is unverified, and nothing is written."""
    if settings.require_signed == "off":
        return
    try:
        choice = choose(settings, tip, last_verified)
    except DeclarationError as exc:
        raise UnverifiedTip(f"{exc}; a pin signed on it would vouch for it, so nothing was committed") from exc
    if choice.commit != tip:
        raise UnverifiedTip(
            f"the tip of {settings.branch}, declarations commit {tip[:12]}, {choice.problem}; a pin signed on it "
            f"would vouch for it, so nothing was committed (the reconciler applies {choice.commit[:12]}). "
            "Have someone with a trusted key sign the commits on top (or reset the branch to "
            f"{choice.commit[:12]}), then run this again")
