"""Verified desired state (opt-in, like Flux `verify` / Argo CD `sourceIntegrity`).

With `require_signed = "head"` the tip of the declarations branch is applied only when it
carries a valid signature: an SSH signature (namespace `git`) by a key in `allowed_signers`,
or a GPG signature by a key in the `gpg_home` keyring. Otherwise the last verified commit
stays in force and every site's status says why. Verification is git's own
(`git verify-commit`), so it means exactly what it means to the operators' git.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from reconciler.config import Settings


def verify(repo: Path, commit: str, settings: Settings) -> str | None:
    """None when `commit` is signed by an allowed key, else the reason it is not."""
    command = ["git", "-C", str(repo), "-c", "gpg.ssh.allowedSignersFile="
               + (str(settings.allowed_signers) if settings.allowed_signers else "/dev/null")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if settings.gpg_home is not None:
        env["GNUPGHOME"] = str(settings.gpg_home)
    try:
        result = subprocess.run([*command, "verify-commit", "--raw", commit], capture_output=True, text=True,
                                env=env, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run git verify-commit: {exc}"
    if result.returncode == 0:
        return None
    detail = " ".join((result.stderr or result.stdout).split())[:200]
    if "no signature" in detail.lower() or not detail:
        return "is not signed"
    return f"has no valid signature by an allowed key ({detail})"
