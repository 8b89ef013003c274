"""require_signed = "head": only a tip signed by an allowed SSH key is applied; otherwise the
last verified commit stays in force and status says why."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.cli.main import main as cli
from reconciler.config import Settings
from reconciler.errors import ConfigError, DeclarationError
from tests.support import git, make_app_repo, make_decl_repo, reconcile, site_file, toml_value

DOMAIN = "signed.example.com"


def _key(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return path


def _commit_site(repo: Path, key: Path | None, **fields: object) -> str:
    site_file(repo, DOMAIN).write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in fields.items()))
    git(repo, "add", "-A")
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "commit", "-S"] if key else ["commit"]
    git(repo, *sign, "-q", "-m", f"change {DOMAIN}")
    return git(repo, "rev-parse", "HEAD")


def test_only_tips_signed_by_an_allowed_key_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trusted, stranger = _key(tmp_path / "trusted"), _key(tmp_path / "stranger")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'ops@localhost namespaces="git" {(tmp_path / "trusted.pub").read_text().strip()}\n')
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    site = {"server": "local", "base_path": str(base), "repository": str(app)}
    settings = Settings(repo=decl, state_dir=tmp_path / "state", require_signed="head", allowed_signers=signers,
                        allow_local=True)
    link = base / DOMAIN

    # An unsigned first tip: nothing verified to fall back to, nothing deployed.
    _commit_site(decl, None, **site)
    with pytest.raises(DeclarationError, match="is not signed"):
        reconcile(settings)
    assert not link.exists()

    # Signed by the trusted key: applied.
    _commit_site(decl, trusted, **site, script="echo one\n")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    first = link.readlink()

    # A stranger's signature and an unsigned commit are refused; the verified one stays in force.
    for key, reason in ((stranger, "no valid signature"), (None, "is not signed")):
        bad = _commit_site(decl, key, **site, script=f"echo {reason}\n")
        outcome = reconcile(settings)[DOMAIN]
        assert outcome.sync == "Synced" and link.readlink() == first, "an unverified tip must not apply"
        config = tmp_path / "reconciler.toml"
        config.write_text(f'require_signed = "head"\nallowed_signers = "{signers}"\nallow_local = true\n')
        assert cli(["--config", str(config), "--repo", str(decl), "--state-dir", str(tmp_path / "state"),
                    "status", "--json"]) == 0
        message = json.loads(capsys.readouterr().out)[0]["message"]
        assert bad[:12] in message and reason in message, message

    # The trusted key signs the change: it applies.
    _commit_site(decl, trusted, **site, script="echo two\n")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    assert link.readlink() != first
    log = (link / "deployment.log").read_text()
    assert "two" in log


def test_require_signed_needs_a_trust_root(tmp_path: Path) -> None:
    config = tmp_path / "reconciler.toml"
    config.write_text('require_signed = "head"\n')
    from reconciler.config import load_settings

    with pytest.raises(ConfigError, match="allowed_signers"):
        load_settings(config)


def test_showing_commands_read_the_applied_commit_not_an_unverified_tip(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Security review H2: `status`, `history`, `nginx` and completion (which reads `status
    --json`) showed the unverified tip: its file names and pins. They read what the daemon
    applies, and say when the tip is newer and not applied."""
    trusted = _key(tmp_path / "trusted")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f'ops@localhost namespaces="git" {(tmp_path / "trusted.pub").read_text().strip()}\n')
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    site = {"server": "local", "base_path": str(tmp_path / "srv"), "repository": str(app)}
    settings = Settings(repo=decl, state_dir=tmp_path / "state", require_signed="head", allowed_signers=signers,
                        allow_local=True)
    _commit_site(decl, trusted, **site)
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    # An unsigned commit adds a site under a hostile name and pins the signed one.
    site_file(decl, "zz-unsigned.example.com").write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in site.items()))
    _commit_site(decl, None, **site, pin="01012020-000000")
    config = tmp_path / "reconciler.toml"
    config.write_text(f'require_signed = "head"\nallowed_signers = "{signers}"\nallow_local = true\n')
    base = ["--config", str(config), "--repo", str(decl), "--state-dir", str(tmp_path / "state")]

    assert cli([*base, "status", "--json"]) == 0
    captured = capsys.readouterr()
    views = json.loads(captured.out)
    assert [v["domain"] for v in views] == [DOMAIN]
    assert views[0]["pinned"] is None
    assert "is not signed" in captured.err

    assert cli([*base, "history", "zz-unsigned.example.com"]) == 1
    assert cli([*base, "nginx", "zz-unsigned.example.com"]) == 1
    capsys.readouterr()
