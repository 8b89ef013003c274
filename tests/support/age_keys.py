"""age keys and encrypted env files for tests: a key pair as `age-keygen` writes it, the
declarations repository's recipients file, and `sites.d/<domain>.env.age` committed."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyrage

from tests.support.repos import git


@dataclass(frozen=True)
class AgeKey:
    identity_file: Path
    public: str


def age_key(path: Path) -> AgeKey:
    """A new X25519 key at `path`, in `age-keygen`'s format (comment lines, then the secret key)."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.write_text(f"# created: by a test\n# public key: {public}\n{identity}\n")
    path.chmod(0o600)
    return AgeKey(path, public)


def write_recipients(repo: Path, *publics: str, commit: bool = True) -> Path:
    file = repo / ".reconciler" / "recipients"
    file.parent.mkdir(exist_ok=True)
    file.write_text("# the reconciler and the team\n" + "".join(f"{p}\n" for p in publics))
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "recipients")
    return file


def seal(repo: Path, domain: str, text: str, *publics: str, commit: bool = True) -> Path:
    """Write sites.d/<domain>.env.age, `text` encrypted to `publics`, and commit it."""
    keys = [pyrage.x25519.Recipient.from_str(p) for p in publics]
    file = repo / "sites.d" / f"{domain}.env.age"
    file.write_bytes(pyrage.encrypt(text.encode(), keys))
    if commit:
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"env of {domain}")
    return file


def age_cli() -> str | None:
    """Debian's `age` CLI, when installed (.ci/deps installs it)."""
    return shutil.which("age")


def age_decrypt_cli(data: bytes, identity_file: Path) -> str:
    done = subprocess.run(["age", "--decrypt", "-i", str(identity_file)], input=data, capture_output=True,
                          check=True)
    return done.stdout.decode()


def age_encrypt_cli(text: str, public: str) -> bytes:
    return subprocess.run(["age", "--encrypt", "-r", public], input=text.encode(), capture_output=True,
                          check=True).stdout
