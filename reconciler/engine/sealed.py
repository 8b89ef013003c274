"""age encryption of a site's environment (`sites.d/<domain>.env.age`): the one module that
imports pyrage. X25519 keys as `age-keygen` writes them, the binary format the `age` CLI reads
and writes (either side can encrypt or decrypt the other's files)."""

from __future__ import annotations

import os
from pathlib import Path

import pyrage

from reconciler.core.site_env import SiteEnv, check_text
from reconciler.errors import ConfigError, DeclarationError


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """The secret keys of an `age-keygen` file (comments and blank lines skipped)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"age_identity_file {path}: cannot be read ({exc.strerror})") from exc
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError as exc:
            # Never quote the line: it is a secret key, or part of one.
            raise ConfigError(f"age_identity_file {path}: a line is not an age secret key") from exc
    if not found:
        raise ConfigError(f"age_identity_file {path}: holds no age secret key")
    return found


def decrypt(data: bytes, identities: list[pyrage.x25519.Identity], where: str) -> SiteEnv:
    """The plaintext of an age file; DeclarationError (saying why, never any content) otherwise."""
    try:
        plain = pyrage.decrypt(data, identities)
    except pyrage.DecryptError as exc:
        raise DeclarationError(f"{where}: cannot be decrypted with age_identity_file "
                               "(not encrypted to the reconciler's key, or corrupt)") from exc
    try:
        text = plain.decode()
    except UnicodeDecodeError as exc:
        raise DeclarationError(f"{where}: the decrypted content is not UTF-8 text") from exc
    if problem := check_text(text):
        raise DeclarationError(f"{where}: the decrypted content {problem}")
    return SiteEnv(text)


def encrypt(text: str, recipients: list[str]) -> bytes:
    """`text` encrypted to every recipient (age public keys, `age1...`)."""
    try:
        keys = [pyrage.x25519.Recipient.from_str(r) for r in recipients]
    except pyrage.RecipientError as exc:
        raise ConfigError(f"a recipient is not a valid age public key ({exc})") from exc
    return bytes(pyrage.encrypt(text.encode(), keys))


def public_key(identity: pyrage.x25519.Identity) -> str:
    return str(identity.to_public())


def generate_key(path: Path) -> str:
    """A new X25519 key written to `path` (0600) as `age-keygen` writes it; returns its public
    key. For `make demo`; operators use `age-keygen -o FILE`."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"# public key: {public}\n{identity}\n")
    return public
