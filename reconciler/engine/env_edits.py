"""`reconciler env keys|set|edit D`: a site's env file read from the tip of the declarations
branch, decrypted with `age_identity_file`, changed, encrypted again to every recipient of
`.reconciler/recipients`, and committed the way a pin is (`actions.committed`: the person as
author, signed under `require_signed`, pushed to a Git host). The plaintext stays in this
process: never in a commit message, argv or a log line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from reconciler.core.declarations import SITES_DIR
from reconciler.core.site_env import RECIPIENTS_FILE, env_file, parse_recipients
from reconciler.engine import actions, pinning, sealed
from reconciler.engine.converge import Reconciler
from reconciler.errors import ConfigError, UnknownSite


@dataclass(frozen=True)
class EnvAtTip:
    """A site's env as the branch tip holds it: the decrypted text ("" when there is no file
    yet) and the encrypted bytes it came from (None: no file), which a commit must still find."""

    domain: str
    text: str = field(repr=False)
    data: bytes | None = field(repr=False)


async def read(reconciler: Reconciler, domain: str) -> EnvAtTip:
    """The site's env at the tip (fetched first from a Git host). UnknownSite when the site is
    not declared there; ConfigError without a usable `age_identity_file`."""
    await actions.refresh(reconciler)
    return await asyncio.to_thread(_read, reconciler, domain)


def _read(reconciler: Reconciler, domain: str) -> EnvAtTip:
    settings = reconciler.settings
    repo, branch = settings.local_repo, settings.branch
    if pinning.read_at_tip(repo, branch, f"{SITES_DIR}/{domain}.toml") is None:
        raise UnknownSite(f"{domain}: no {SITES_DIR}/{domain}.toml on {branch}")
    data = pinning.read_at_tip(repo, branch, env_file(domain))
    if data is None:
        return EnvAtTip(domain, "", None)
    if settings.age_identity_file is None:
        raise ConfigError("age_identity_file is not set in reconciler.toml: the env file cannot be decrypted")
    env = sealed.decrypt(data, sealed.load_identities(settings.age_identity_file), env_file(domain))
    return EnvAtTip(domain, env.text, data)


async def commit(reconciler: Reconciler, base: EnvAtTip, text: str, message: str, author: str) -> str | None:
    """Commit `text` as the site's env file, encrypted to the repository's recipients. None (and
    nothing committed) when `text` is what the tip holds already."""
    if text == base.text and base.data is not None:
        return None
    settings = reconciler.settings
    repo, branch = settings.local_repo, settings.branch
    listed = pinning.read_at_tip(repo, branch, RECIPIENTS_FILE)
    if listed is None:
        raise ConfigError(f"{RECIPIENTS_FILE} is missing on {branch}: list the age public keys the env files are "
                          "encrypted to (the reconciler's, from its age_identity_file, and the team's), one a line")
    try:
        recipients = parse_recipients(listed.decode("utf-8", "replace"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    data = sealed.encrypt(text, recipients)
    name = env_file(base.domain).removeprefix(f"{SITES_DIR}/")

    def attempt(publish: pinning.Publish | None, verified: str | None) -> str:
        return pinning.commit_sites_file(repo, branch, name, data, message, settings, author=author,
                                         publish=publish, verified=verified, based_on=base.data)

    path = env_file(base.domain)
    return await actions.committed(reconciler, attempt, lambda: pinning.read_at_tip(repo, branch, path),
                                   lambda before, now: f"{path} changed on {settings.repo_url} meanwhile; "
                                                       "nothing was committed: run the command again")
