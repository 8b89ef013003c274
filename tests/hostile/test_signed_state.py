"""`require_signed` cannot be downgraded or bypassed.

Threat model: someone who can push to the declarations branch but not sign cannot get anything
applied. Three ways around it that worked before this change, each tested by running the
attack itself:

* Downgrade: reset the branch to an older commit that IS validly signed (a known-vulnerable build): it
  was verified and applied. Now only descendants of the last verified commit apply; anything else
  needs `reconciler accept`, which is logged and recorded with who ran it.
* Default keyring: with only `allowed_signers` configured, a GPG signature by any key in the daemon user's
  default keyring passed (git verify-commit accepts trust "undefined"). Now GnuPG sees only
  `gpg_home` (or an empty keyring), and a key there counts only at `gpg_min_trust` or above.
* Unsigned pins: `rollback`/`unpin` wrote unsigned commits that were never applied while the command said
  it worked. Now they sign with `signing_key` (and check the result verifies) or refuse, exit 1,
  with nothing committed.

Real git repositories, real ssh-keygen and gpg, `server = "local"`, the CLI in this process.
Against the code before this change (e49cf4c, run with an equivalent config): the downgrade redeployed
OLD-VULNERABLE-BUILD, the default keyring applied the stranger's commit, rollback/unpin exited 0 with
an unsigned pin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import Settings
from reconciler.engine import trust
from reconciler.engine.converge import LAST_OVERRIDE
from reconciler.engine.store import Store
from tests.support import cli_in_process, git, make_app_repo, make_decl_repo, site_file, toml_value, write_config
from tests.support.repos import ssh_key

DOMAIN = "signed.example.com"


def _signers(path: Path, *keys: Path) -> Path:
    path.write_text("".join(f'ops@localhost namespaces="git" {Path(str(k) + ".pub").read_text().strip()}\n'
                            for k in keys))
    return path


class Decl:
    """A declarations repository whose commits are signed (SSH or GPG) or not."""

    def __init__(self, repo: Path, site: dict[str, Any]) -> None:
        self.repo, self.site = repo, site

    def commit(self, script: str, ssh_key: Path | None = None, gpg: tuple[Path, str] | None = None) -> str:
        site_file(self.repo, DOMAIN).write_text(
            "".join(f"{k} = {toml_value(v)}\n" for k, v in {**self.site, "script": script}.items()))
        git(self.repo, "add", "-A")
        env = dict(os.environ)
        args = ["commit", "-q", "-m", f"script: {script.strip()}"]
        if ssh_key is not None:
            args = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={ssh_key}", *args, "-S"]
        elif gpg is not None:
            env["GNUPGHOME"] = str(gpg[0])
            args = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={gpg[1]}", *args, "-S"]
        subprocess.run(["git", *args], cwd=self.repo, env=env, check=True, capture_output=True)
        return git(self.repo, "rev-parse", "HEAD")


@pytest.fixture
def world(tmp_path: Path) -> tuple[Decl, Path]:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    return Decl(decl, {"server": "local", "base_path": str(tmp_path / "srv"), "repository": str(app)}), tmp_path


def _cli(config: Path, *args: str) -> tuple[int, str, str]:
    return cli_in_process(["--config", str(config), *args])


def _config(tmp: Path, **values: Any) -> Path:
    return write_config(tmp / "reconciler.toml", repo=tmp / "decl", state=tmp / "state", require_signed="head",
                        allow_local=True, **values)


def _live_log(tmp: Path) -> str:
    return (tmp / "srv" / DOMAIN / "deployment.log").read_text()


def _status(config: Path) -> dict[str, Any]:
    rc, out, err = _cli(config, "status", "--json")
    assert rc == 0, err
    views: list[dict[str, Any]] = json.loads(out)
    return views[0]


def test_an_older_signed_commit_is_not_applied_without_an_explicit_accept(world: tuple[Decl, Path]) -> None:
    decl, tmp = world
    key = ssh_key(tmp / "key")
    config = _config(tmp, allowed_signers=_signers(tmp / "allowed_signers", key))
    old = decl.commit("echo OLD-VULNERABLE-BUILD\n", ssh_key=key)
    assert _cli(config, "reconcile")[0] == 0
    patched = decl.commit("echo PATCHED-BUILD\n", ssh_key=key)
    assert _cli(config, "reconcile")[0] == 0
    assert "PATCHED-BUILD" in _live_log(tmp)

    # A pusher without the key puts the old, validly signed commit back.
    git(decl.repo, "update-ref", "refs/heads/main", old)
    rc, out, err = _cli(config, "reconcile")
    assert "PATCHED-BUILD" in _live_log(tmp) and "OLD-VULNERABLE-BUILD" not in _live_log(tmp)
    message = _status(config)["message"]
    assert "does not descend from the last verified commit" in message and patched[:12] in message, message
    assert "reconciler accept" in message

    # The operator means it: `accept` is the override, recorded with who ran it.
    rc, out, err = _cli(config, "accept")
    assert rc == 0 and old[:12] in out, (out, err)
    store = Store(tmp / "state" / "reconciler.db")
    record = json.loads(store.meta(LAST_OVERRIDE) or "{}")
    store.close()
    assert record["commit"] == old and record["replaced"] == patched and record["by"]
    assert _cli(config, "reconcile")[0] == 0
    assert "OLD-VULNERABLE-BUILD" in _live_log(tmp)

    # accept keeps requiring a signature: an unsigned tip is not accepted.
    unsigned = decl.commit("echo UNSIGNED\n")
    rc, out, err = _cli(config, "accept")
    assert rc == 1 and "is not signed" in err and unsigned[:12] in err, (out, err)


@pytest.fixture
def gnupg() -> Iterator[Any]:
    """Makes GnuPG homes (short paths: the agent's socket must fit) and stops their agents."""
    homes: list[Path] = []

    def make() -> Path:
        home = Path(tempfile.mkdtemp(prefix="g", dir="/tmp"))
        home.chmod(0o700)
        homes.append(home)
        return home

    yield make
    for home in homes:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "", *args], input=stdin, capture_output=True, check=True).stdout


def _gpg_key(home: Path) -> str:
    _gpg(home, "--quick-gen-key", "Stranger <stranger@localhost>", "ed25519", "sign", "never")
    listing = _gpg(home, "--with-colons", "--list-keys").decode()
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


def test_gpg_trusts_only_the_configured_keyring_at_the_minimum_trust(
        world: tuple[Decl, Path], gnupg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    decl, tmp = world
    # The daemon user's own default keyring holds a stranger's key (here: $HOME/.gnupg).
    home = tmp / "home"
    default_keyring = home / ".gnupg"
    default_keyring.mkdir(parents=True, mode=0o700)
    shutil.rmtree(default_keyring)
    stranger_home = gnupg()
    fingerprint = _gpg_key(stranger_home)
    default_keyring.symlink_to(stranger_home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GNUPGHOME", raising=False)
    commit = decl.commit("echo STRANGER\n", gpg=(stranger_home, fingerprint))

    ssh_only = Settings(repo=decl.repo, state_dir=tmp / "state", require_signed="head",
                        allowed_signers=_signers(tmp / "allowed_signers", ssh_key(tmp / "ops")))
    assert trust.verify(decl.repo, commit, ssh_only) is not None, "the default keyring must not count"

    # The key in the configured keyring, but never marked trusted: below the minimum trust.
    trusted_home = gnupg()
    _gpg(trusted_home, "--import", stdin=_gpg(stranger_home, "--export", fingerprint))
    configured = Settings(repo=decl.repo, state_dir=tmp / "state", require_signed="head", gpg_home=trusted_home)
    problem = trust.verify(decl.repo, commit, configured)
    assert problem is not None and "no valid signature" in problem, problem
    # The operator marks it trusted: now it verifies.
    _gpg(trusted_home, "--import-ownertrust", stdin=f"{fingerprint}:6:\n".encode())
    assert trust.verify(decl.repo, commit, configured) is None


def test_rollback_and_unpin_sign_their_commit_or_refuse(world: tuple[Decl, Path]) -> None:
    decl, tmp = world
    ops, pinner, stranger = ssh_key(tmp / "ops"), ssh_key(tmp / "pinner"), ssh_key(tmp / "stranger")
    signers = _signers(tmp / "allowed_signers", ops, pinner)
    config = _config(tmp, allowed_signers=signers)
    decl.commit("echo ONE\n", ssh_key=ops)
    assert _cli(config, "reconcile")[0] == 0
    first = (tmp / "srv" / DOMAIN).readlink().name
    decl.commit("echo TWO\n", ssh_key=ops)
    assert _cli(config, "reconcile")[0] == 0
    tip = git(decl.repo, "rev-parse", "main")

    # No signing key: refused, exit 1, nothing committed.
    rc, out, err = _cli(config, "rollback", DOMAIN)
    assert rc == 1 and "signing_key" in err, (out, err)
    assert git(decl.repo, "rev-parse", "main") == tip

    # A key the daemon does not trust: refused too (the pin would never apply), nothing committed.
    rc, out, err = _cli(_config(tmp, allowed_signers=signers, signing_key=stranger), "rollback", DOMAIN)
    assert rc == 1 and "no valid signature" in err, (out, err)
    assert git(decl.repo, "rev-parse", "main") == tip

    # A trusted signing key: the pin is a signed commit that the next pass applies.
    config = _config(tmp, allowed_signers=signers, signing_key=pinner)
    rc, out, err = _cli(config, "rollback", DOMAIN)
    assert rc == 0, (out, err)
    assert git(decl.repo, "rev-parse", "main^") == tip
    settings = Settings(repo=decl.repo, state_dir=tmp / "state", require_signed="head", allowed_signers=signers)
    assert trust.verify(decl.repo, git(decl.repo, "rev-parse", "main"), settings) is None
    assert _cli(config, "reconcile")[0] == 0
    assert (tmp / "srv" / DOMAIN).readlink().name == first
    assert _status(config)["pinned"] == first

    rc, out, err = _cli(config, "unpin", DOMAIN)
    assert rc == 0, (out, err)
    assert _cli(config, "reconcile")[0] == 0
    assert _status(config)["pinned"] is None and "TWO" in _live_log(tmp)
