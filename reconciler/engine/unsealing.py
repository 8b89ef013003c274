"""Where the declarations meet the reconciler's age key: each site with a
`sites.d/<domain>.env.age` in the applied commit gets its decrypted environment attached
(`SiteDeclaration.env`); a site whose file cannot be decrypted (no `age_identity_file`, not
encrypted to it, corrupt) is Invalid with the reason, and nothing else changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from reconciler.core.declarations import Declarations, InvalidSite
from reconciler.core.site_env import SiteEnv, env_file
from reconciler.engine import sealed
from reconciler.errors import ConfigError, DeclarationError


class Unsealer:
    """Decrypts env files, each ciphertext once (by its sha256): a pass re-applies the same
    commit every minute, and x25519 plus the key file's read are not free at fleet size."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str], SiteEnv | str] = {}
        # The last answer, by the identity of the dicts it was made from: the daemon asks at every
        # wake-up with the same parsed sites, and `DesiredState.owned` splits them once only
        # while it gets the same dicts back.
        self._last: tuple[object, object, Path | None, Declarations] | None = None

    def open(self, decls: Declarations, identity_file: Path | None) -> Declarations:
        """`decls` with env files opened: sites get `env`, failures become Invalid. `decls`
        itself when no site has an env file."""
        if not decls.sealed:
            return decls
        last = self._last
        if last is not None and last[0] is decls.sites and last[1] is decls.invalid and last[2] == identity_file:
            return dataclasses.replace(decls, sites=last[3].sites, invalid=last[3].invalid)
        sites, invalid = dict(decls.sites), dict(decls.invalid)
        opened: dict[tuple[str, str], SiteEnv | str] = {}
        identities: list[object] | str | None = None
        for domain, data in decls.sealed.items():
            site = sites.get(domain)
            if site is None:
                continue
            key = (str(identity_file), hashlib.sha256(data).hexdigest())
            result = self._known.get(key)
            if result is None:
                if identities is None:
                    identities = _identities(identity_file)
                result = _open(data, identities, env_file(domain))
            opened[key] = result
            if isinstance(result, SiteEnv):
                sites[domain] = site.with_env(result)
            else:
                del sites[domain]
                invalid[domain] = InvalidSite(domain, env_file(domain), (result,), site.server)
        self._known = opened  # the applied commit's only: an old secret is not kept past its commit
        opened_decls = dataclasses.replace(decls, sites=sites, invalid=dict(sorted(invalid.items())))
        self._last = (decls.sites, decls.invalid, identity_file, opened_decls)
        return opened_decls


def _identities(identity_file: Path | None) -> list[object] | str:
    if identity_file is None:
        return "age_identity_file is not set in reconciler.toml: the site's env file cannot be decrypted"
    try:
        return list(sealed.load_identities(identity_file))
    except ConfigError as exc:
        return str(exc)


def _open(data: bytes, identities: list[object] | str, where: str) -> SiteEnv | str:
    if isinstance(identities, str):
        return f"{where}: {identities}"
    try:
        return sealed.decrypt(data, identities, where)
    except DeclarationError as exc:
        return str(exc)
