"""Credentials never sit in a repository URL we show or store.

A token or password in a URL leaks: to every local user through the argv of git and ssh (`ps`),
through a clone's 0644 `.git/config` and the release manifest, and to whoever reads status, the
dashboard or a notification. So a site whose `repository` holds credentials is Invalid (only that
site: the others deploy), and a reconciler.toml whose `repo` holds them is a configuration error
(nothing runs). What counts (reconciler/settings_file.py `url_credentials`): over any transport
but SSH, any user information (GitHub takes a bare token as the user name); over SSH (`ssh://`,
scp-like `user@host:path`) a password, never the login name (`git@github.com:...` stays valid).
No message may echo the secret it refuses: every secret below is looked for in every output.

Against the code before the fix these sites were valid and deployed (or tried to), and
`declarations repository https://ops:<token>@... unreachable` named the token.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.config import load_settings
from tests.support import World, run_reconciler, write_config

# domain -> repository that holds credentials; each secret is unique, to be looked for everywhere.
REFUSED = {
    "token-user.example.com": "https://ghp_TokenAsUser0001@127.0.0.1:1/app.git",
    "github-app.example.com": "https://x-access-token:ghs_Secret0002@127.0.0.1:1/app.git",
    "gitlab-oauth.example.com": "https://oauth2:glpat-Secret0003@127.0.0.1:1/app.git",
    "percent.example.com": "https://deploy%3Aglpat-Secret0004@127.0.0.1:1/app.git",
    "plain-http.example.com": "HTTP://deploy:Secret0005@127.0.0.1:1/app.git",
    "ssh-password.example.com": "ssh://git:Secret0006@127.0.0.1/app.git",
    "ssh-encoded.example.com": "ssh://git%3ASecret0007@127.0.0.1/app.git",
    "scp-password.example.com": "git:Secret0008@127.0.0.1:app.git",
    "helper.example.com": "persistent-https::https://Secret0009@127.0.0.1:1/app.git",
    "ftp.example.com": "ftps://deploy:Secret0010@127.0.0.1:1/app.git",
}
SECRETS = ["ghp_TokenAsUser0001", "ghs_Secret0002", "glpat-Secret0003", "glpat-Secret0004", *(
    f"Secret{n:04d}" for n in range(5, 11))]
# Valid forms (the app never needs to be reached: `validate` only judges).
ALLOWED = {
    "scp.example.com": "git@127.0.0.1:acme/app.git",
    "ssh-user.example.com": "ssh://git@127.0.0.1/acme/app.git",
    "ssh-ipv6.example.com": "ssh://git@[::1]:2222/acme/app.git",
    "alias.example.com": "web-git:acme/app.git",
    "https.example.com": "https://127.0.0.1:1/acme/app.git",
    "path.example.com": "/srv/git/app.git",
    "at-in-path.example.com": "https://127.0.0.1:1/acme/app@v2.git",
}


def _no_secret(*outputs: str) -> None:
    for text in outputs:
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} is shown:\n{text}"


def _error_line(domain: str) -> str:
    # World.declare writes server, base_path, repository: the repository is line 3.
    return f"sites.d/{domain}.toml:3: repository: must not hold credentials, here "


def _files_hold_secret(root: Path) -> list[str]:
    found = []
    for file in root.rglob("*"):
        if file.is_file() and not file.is_symlink():
            data = file.read_bytes()
            found += [f"{file}: {s}" for s in SECRETS if s.encode() in data]
    return found


def test_validate_refuses_exactly_the_urls_with_credentials_and_never_prints_them(tmp_path: Path) -> None:
    world = World.create(tmp_path)
    for domain, url in {**REFUSED, **ALLOWED}.items():
        world.declare(domain, repository=url, commit=False)
    world.declare("last.example.com")  # commits them all

    for target in ((str(world.decl),), ()):  # the work tree, then the committed tip
        done = world.run_cli_process("validate", *target)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"{len(ALLOWED) + 1} valid, {len(REFUSED)} invalid" in done.stdout, done.stdout
        for domain in REFUSED:
            assert _error_line(domain) in done.stdout, (domain, done.stdout)
        for domain in ALLOWED:
            assert f"sites.d/{domain}.toml" not in done.stdout, (domain, done.stdout)
        assert "user:password@" in done.stdout and "credential helper" in done.stdout, done.stdout
        assert "Traceback" not in done.stderr, done.stderr
        _no_secret(done.stdout, done.stderr)


def test_a_site_with_credentials_is_invalid_and_only_that_site(tmp_path: Path) -> None:
    """A real pass: the refused sites are Invalid and untouched; a good site of the same pass
    deploys; no output, status, state file or server file holds a secret."""
    world = World.create(tmp_path)
    for domain, url in REFUSED.items():
        world.declare(domain, repository=url, commit=False)
    world.declare("good.example.com")

    done = world.run_cli_process("reconcile")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines() if ": " in line}
    assert lines["good.example.com"].startswith("good.example.com: Synced/Healthy"), done.stdout
    assert world.active("good.example.com") is not None
    for domain in REFUSED:
        assert lines[domain].startswith(f"{domain}: Invalid/Unknown - {_error_line(domain)}"), done.stdout
        assert not world.deployments(domain).exists(), f"{domain}: a refused site was touched"

    status = world.run_cli_process("status", "--json")
    assert status.returncode == 0, status.stderr
    views = {view["domain"]: view for view in json.loads(status.stdout)}
    assert views["good.example.com"]["sync"] == "Synced"
    for domain in REFUSED:
        assert views[domain]["sync"] == "Invalid" and "must not hold credentials" in views[domain]["message"]
    history = world.run_cli_process("history", "token-user.example.com", "--json")
    _no_secret(done.stdout, done.stderr, status.stdout, status.stderr, history.stdout, history.stderr)
    assert _files_hold_secret(world.state) == [] and _files_hold_secret(world.base) == []


@pytest.mark.parametrize(("repo", "secret"), [
    ("https://ops:ghp_SecretInRepo01@127.0.0.1:1/sites.git", "ghp_SecretInRepo01"),
    ("https://ghp_SecretInRepo02@127.0.0.1:1/sites.git", "ghp_SecretInRepo02"),
    ("ssh://git:SecretInRepo03@127.0.0.1:1/sites.git", "SecretInRepo03"),
    ("ops:SecretInRepo04@127.0.0.1:sites.git", "SecretInRepo04"),
])
def test_a_declarations_repo_with_credentials_is_a_config_error(tmp_path: Path, repo: str, secret: str) -> None:
    """reconciler.toml's `repo`: the configuration is refused before anything runs (no fetch, no
    state directory), with a message that names the supported ways and not the secret."""
    state = tmp_path / "state"
    config = write_config(tmp_path / "reconciler.toml", repo=repo, state=state)
    for command in (("reconcile",), ("validate",), ("status",)):
        done = run_reconciler("--config", str(config), *command, cwd=tmp_path)
        output = done.stdout + done.stderr
        assert done.returncode == 2, (command, output)
        assert "repo: " in done.stderr and "must not hold credentials" in done.stderr, (command, output)
        assert "repo_token_file" in done.stderr and "repo_identity_file" in done.stderr, output
        assert secret not in output, (command, output)
        assert "Traceback" not in output, output
    assert not state.exists(), "nothing may run with a refused configuration"

    # The supported forms load.
    for good in ("ssh://git@127.0.0.1:1/sites.git", "git@127.0.0.1:sites.git", "https://127.0.0.1:1/sites.git"):
        write_config(config, repo=good, state=state)
        assert load_settings(config).repo_url == good
