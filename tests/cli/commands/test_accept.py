"""`reconciler accept [COMMIT]`: with require_signed, makes a signed commit the last verified one
and says what it replaced and who asked (the override record and the reset attack are
tests/hostile/test_signed_state.py's). Without require_signed there is nothing to accept (exit 2);
a commit not on the branch is refused (exit 1); nothing is recorded either way. Real git, real
ssh-keygen signatures, the CLI in this process."""

from __future__ import annotations

import subprocess
from pathlib import Path

from reconciler.cli.person import person
from reconciler.engine.converge import LAST_VERIFIED
from reconciler.engine.store import Store
from tests.support import cli_in_process, git, make_decl_repo, write_config, write_site
from tests.support.repos import ssh_key

DOMAIN = "signed.example.com"


def _signed_repo(tmp_path: Path) -> tuple[Path, Path]:
    """A declarations repository whose tip is signed by a key the returned allowed-signers file trusts."""
    key = ssh_key(tmp_path / "signing")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'ops@localhost namespaces="git" {Path(str(key) + ".pub").read_text().strip()}\n')
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, commit=False, server="local", base_path=str(tmp_path / "srv"),
               repository=str(tmp_path / "app"))
    git(decl, "add", "-A")
    subprocess.run(["git", "-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-q", "-S", "-m",
                    "signed"], cwd=decl, check=True, capture_output=True)
    return decl, signers


def _verified(tmp_path: Path) -> str | None:
    db = tmp_path / "state" / "reconciler.db"
    if not db.exists():
        return None
    store = Store(db)
    try:
        return store.meta(LAST_VERIFIED)
    finally:
        store.close()


def test_accept_records_the_signed_tip_as_verified_and_says_who(tmp_path: Path) -> None:
    decl, signers = _signed_repo(tmp_path)
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state", require_signed="head",
                          allowed_signers=signers)
    tip = git(decl, "rev-parse", "main")
    rc, out, err = cli_in_process(["--config", str(config), "accept"])
    assert rc == 0, (out, err)
    assert out == (f"accepted {tip[:12]} as the verified declarations commit (was none); "
                   f"recorded as an override by {person()}\n")
    assert _verified(tmp_path) == tip


def test_a_commit_not_on_the_branch_is_refused(tmp_path: Path) -> None:
    decl, signers = _signed_repo(tmp_path)
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state", require_signed="head",
                          allowed_signers=signers)
    git(decl, "checkout", "-q", "-b", "side")
    git(decl, "commit", "-q", "--allow-empty", "-m", "elsewhere")
    side = git(decl, "rev-parse", "side")
    rc, out, err = cli_in_process(["--config", str(config), "accept", side])
    assert rc == 1, (out, err)
    assert f"{side[:12]} is not on main" in err and "nothing accepted" in err
    assert _verified(tmp_path) is None


def test_without_require_signed_there_is_nothing_to_accept(tmp_path: Path) -> None:
    decl = make_decl_repo(tmp_path / "decl")
    config = write_config(tmp_path / "reconciler.toml", repo=decl, state=tmp_path / "state")
    rc, out, err = cli_in_process(["--config", str(config), "accept"])
    assert rc == 2 and out == "", (out, err)
    assert 'accept is for require_signed = "head"; nothing to accept' in err
    assert _verified(tmp_path) is None
