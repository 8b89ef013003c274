"""Rollback is a commit: write (or remove) `pin` in a site file and commit it to the branch.

The TOML is edited with tomlkit so operators' comments and layout survive. The commit is
built from the branch tip's tree, never from the index, so unrelated staged or unstaged
work in a checkout is left alone; a checked-out copy of the file is refreshed when clean.

Under `require_signed` the pin commit is signed (`engine.trust.sign`), verified exactly as the
daemon will verify it, and only then does the branch move; without a usable key nothing is
committed and the caller gets a `SigningError` (an unsigned pin would never be applied). It is
only ever signed on verified ground: when the tip it would sit on is not what the daemon applies
(someone pushed without signing), `UnverifiedTip` and nothing is written (`trust.check_ground`).

Which release a rollback pins, and whether it may, is `engine.actions`' decision (from the
server's facts, for the CLI and the HTTP API alike); this module only writes the commit.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pygit2
import tomlkit

from reconciler.config import Settings
from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import SITES_DIR, InvalidSite
from reconciler.engine import trust
from reconciler.engine.source import branch_tip, layers_at, open_repository
from reconciler.errors import DeclarationError, PinConflict, SigningError


def _signature(repo: pygit2.Repository) -> pygit2.Signature:
    try:
        return repo.default_signature
    except (KeyError, pygit2.GitError):
        name = os.environ.get("GIT_AUTHOR_NAME", "reconciler")
        return pygit2.Signature(name, os.environ.get("GIT_AUTHOR_EMAIL", "reconciler@localhost"))


Publish = Callable[[str, str], None]  # (new commit, the tip it was made on): push it, or raise PinConflict


def current_pin(repo_path: str | Path, branch: str, domain: str) -> str | None:
    """The `pin` of `domain`'s file at the tip of `branch` (None: not pinned, or no such file)."""
    repo = open_repository(repo_path)
    tip = branch_tip(repo, branch)
    try:
        blob = repo.get(tip.tree[f"{SITES_DIR}/{domain}.toml"].id) if tip is not None else None
    except KeyError:
        return None
    if not isinstance(blob, pygit2.Blob):
        return None
    value = tomlkit.parse(blob.data.decode()).get("pin")
    return str(value) if value is not None else None


def set_pin(repo_path: str | Path, branch: str, domain: str, pin: str | None,
            settings: Settings | None = None, *, author: str | None = None, publish: Publish | None = None,
            verified: str | None = None) -> str:
    """Commit `pin = "<pin>"` (or its removal when `pin` is None). Returns the new commit id.
    `settings` decide whether the commit must be signed (`require_signed`) and with which key.
    `author` ("Name <email>") is who asked (default: this user's git identity); the committer is
    the reconciler. With `publish` (a declarations repository on a Git host) the commit is pushed
    before the branch moves here, so nothing is applied that the remote does not have.
    `verified` is the last verified commit (the store's): a signed pin's parent must be it or a
    verified descendant of it."""
    repo, tip, signing = _ground(repo_path, branch, settings, verified)
    path = f"{SITES_DIR}/{domain}.toml"
    try:
        blob = repo.get(tip.tree[path].id)
    except KeyError as exc:
        raise DeclarationError(f"{path}: no such site declared on {branch}") from exc
    assert isinstance(blob, pygit2.Blob)
    document = tomlkit.parse(blob.data.decode())
    if pin is None:
        if "pin" not in document:
            raise DeclarationError(f"{domain} is not pinned")
        del document["pin"]
        message = f"unpin {domain}: follow its branch again"
    else:
        document["pin"] = pin
        message = f"rollback {domain} to release {pin}"
    text = tomlkit.dumps(document)
    # Judged as the site it is: over the tip's defaults and the template it names.
    checked = parse_site(path, text.encode(), layers_at(repo, tip.tree))
    if isinstance(checked, InvalidSite):
        raise DeclarationError("refusing to commit an invalid declaration: " + checked.message)

    commit = _commit_in_sites(repo, Path(repo_path), branch, tip, f"{domain}.toml", text.encode(), message,
                              signing, author, publish)
    _refresh_checkout(repo, branch, path, blob.data, text)
    return commit


def _commit_in_sites(repo: pygit2.Repository, repo_path: Path, branch: str, tip: pygit2.Commit, name: str,
                     data: bytes, message: str, signing: Settings | None, author: str | None,
                     publish: Publish | None, what: str | None = None) -> str:
    """Commit `data` as sites.d/`name` on `tip` (signed with `signing`'s key when given), then
    publish it (a Git host) or move the branch here. Returns the commit id. The one way a
    command commits to the declarations: pins and env files alike."""
    sites = repo.get(tip.tree[SITES_DIR].id)
    assert isinstance(sites, pygit2.Tree)
    sites_builder = repo.TreeBuilder(sites)
    sites_builder.insert(name, repo.create_blob(data), pygit2.GIT_FILEMODE_BLOB)
    root_builder = repo.TreeBuilder(tip.tree)
    root_builder.insert(SITES_DIR, sites_builder.write(), pygit2.GIT_FILEMODE_TREE)
    tree = root_builder.write()
    who = _parse_author(author) if author else _signature(repo)
    committer = pygit2.Signature("reconciler", f"reconciler@{socket.gethostname()}")
    if signing is not None:
        commit = _signed_commit(repo, repo_path, who, committer, message, tree, tip.id, signing)
    else:
        commit = str(repo.create_commit(None, who, committer, message, tree, [tip.id]))
    if publish is not None:
        publish(commit, str(tip.id))
    else:
        _advance(repo_path, branch, commit, str(tip.id), message, name.removesuffix(".toml"), what)
    return commit


def read_at_tip(repo_path: str | Path, branch: str, path: str) -> bytes | None:
    """The bytes of file `path` at the tip of `branch` (None: no such file)."""
    repo = open_repository(repo_path)
    tip = branch_tip(repo, branch)
    try:
        blob = repo.get(tip.tree[path].id) if tip is not None else None
    except KeyError:
        return None
    return bytes(blob.data) if isinstance(blob, pygit2.Blob) else None


def commit_sites_file(repo_path: str | Path, branch: str, name: str, data: bytes, message: str,
                      settings: Settings | None = None, *, author: str | None = None,
                      publish: Publish | None = None, verified: str | None = None,
                      based_on: bytes | None = None) -> str:
    """Commit sites.d/`name` with `data` (an env file), as `set_pin` commits a pin: signed under
    `require_signed`, `author` as the author, published to a Git host with `publish`.
    `based_on`: the file's content the change was made from (None: it did not exist); when the
    tip holds anything else, PinConflict and nothing is committed (someone changed it first)."""
    repo, tip, signing = _ground(repo_path, branch, settings, verified)
    if read_at_tip(repo_path, branch, f"{SITES_DIR}/{name}") != based_on:
        raise PinConflict(f"{SITES_DIR}/{name} changed on {branch} meanwhile; nothing was committed: run the "
                          "command again")
    return _commit_in_sites(repo, Path(repo_path), branch, tip, name, data, message,
                            signing, author, publish, f"{SITES_DIR}/{name}")


def _parse_author(text: str) -> pygit2.Signature:
    name, _, email = text.partition("<")
    if not name.strip() or not email.endswith(">") or any(c in text for c in "\n\r\0"):
        raise DeclarationError(f"author {text!r} is not 'Name <email>'")
    return pygit2.Signature(name.strip(), email[:-1].strip())


def _ground(repo_path: str | Path, branch: str, settings: Settings | None,
            verified: str | None) -> tuple[pygit2.Repository, pygit2.Commit, Settings | None]:
    """The repository, the branch tip a commit will sit on, and the settings to sign it with
    (None: `require_signed` is off). Under `require_signed` the signing key must be usable and
    the tip verified ground (`verified` or a verified descendant of it): else nothing is made."""
    signing = settings if settings is not None and settings.require_signed != "off" else None
    if signing is not None:
        trust.check_signer(signing)
    repo = open_repository(repo_path)
    tip = branch_tip(repo, branch)
    if tip is None:
        raise DeclarationError(f"branch {branch!r} has no commit")
    if signing is not None:
        trust.check_ground(signing, str(tip.id), verified)
    return repo, tip, signing


def _signed_commit(repo: pygit2.Repository, repo_path: Path, author: pygit2.Signature, committer: pygit2.Signature,
                   message: str, tree: pygit2.Oid, parent: pygit2.Oid, settings: Settings) -> str:
    """Write a signed commit and check it verifies as the daemon will check it (the branch does
    not move here)."""
    # pygit2's stub says Oid; libgit2 hands back the commit's text, which is what gets signed.
    content = str(repo.create_commit_string(author, committer, message, tree, [parent]))
    oid = repo.create_commit_with_signature(content, trust.sign(content.encode(), settings))
    problem = trust.verify(repo_path, str(oid), settings)
    if problem is not None:
        raise SigningError(f"the pin commit was signed but {problem}: is the signing key among the trusted "
                           "ones (allowed_signers / gpg_home)? Nothing was committed")
    return str(oid)


def _advance(repo_path: Path, branch: str, commit: str, parent: str, message: str, domain: str,
             what: str | None = None) -> None:
    """Move the branch from `parent` to `commit` (compare-and-swap: a concurrent commit is
    refused, not lost)."""
    try:
        result = subprocess.run(["git", "-C", str(repo_path), "update-ref", "-m", message, f"refs/heads/{branch}",
                                 commit, parent], capture_output=True, text=True, timeout=trust.TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DeclarationError(f"cannot commit to {branch}: {exc}") from exc
    if result.returncode != 0:
        if "but expected" in result.stderr or "is at" in result.stderr:
            what = what or f"the pin of {domain}"
            raise PinConflict(f"{branch} moved while committing {what} (another commit landed first); nothing "
                              "was committed: run the command again")
        raise DeclarationError(f"cannot commit to {branch}: {' '.join(result.stderr.split())[:200]}")


def _refresh_checkout(repo: pygit2.Repository, branch: str, path: str, old: bytes, new: str) -> None:
    """Keep a checkout of `branch` in step, but only where the file had no local edits."""
    if repo.is_bare or repo.head_is_unborn or repo.head.name != f"refs/heads/{branch}":
        return
    file = Path(repo.workdir) / path
    if not file.is_file() or file.read_bytes() != old:
        return
    file.write_text(new)
    repo.index.read()
    repo.index.add(path)
    repo.index.write()
