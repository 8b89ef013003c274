"""A declarations repository on a Git host: the reconciler's own mirror of it, fetched and
pushed with the `git` command.

With `repo` a URL (`ssh://`, `git@host:path`, `https://`, `file://`) the declarations are read
from a bare mirror under `state_dir` (`Settings.local_repo`), refreshed by `fetch` (at start,
every `repo_interval`, on a webhook, before `reconcile`). Rollback and unpin commits are made in
the mirror and `push`ed; nothing is applied that the remote does not have.

Credentials stay out of sight: SSH uses `repo_identity_file` (or `identity_file`) with host keys
verified against `known_hosts` exactly as for servers (StrictHostKeyChecking=yes, never
`accept-new`); HTTPS (or plain HTTP to this machine only) sends a token read from `repo_token_file` or
$RECONCILER_REPO_TOKEN as an HTTP header given to git through its environment (never a command line, never the mirror's
config, never a log line: every message is scrubbed of it). Global and system git config are
ignored, so an operator's `insteadOf` or credential helper cannot redirect or leak anything.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import subprocess
from urllib.parse import urlsplit

from reconciler.config import Settings
from reconciler.errors import ConfigError, DeclarationError, PushRejected, RepoUnreachable
from reconciler.remote.protocol import seam

TOKEN_ENV = "RECONCILER_REPO_TOKEN"
FETCH_TIMEOUT = 120.0
REFSPEC = "+refs/heads/*:refs/heads/*"


class Upstream:
    def __init__(self, settings: Settings) -> None:
        url = settings.repo_url
        if url is None:
            raise ConfigError("repo is a local path, not a URL")
        self.url = url
        self.settings = settings
        self.mirror = settings.local_repo
        self._token = self._read_token() if _may_carry_token(url) else None

    def _read_token(self) -> str | None:
        file = self.settings.repo_token_file
        if file is not None:
            try:
                return file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"repo_token_file {file}: {exc.strerror}") from exc
        return os.environ.get(TOKEN_ENV) or None

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_ASKPASS="true")
        settings = self.settings
        ssh = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"ConnectTimeout={int(settings.connect_timeout)}"]
        key = settings.repo_identity_file or settings.identity_file
        if key is not None:
            ssh += ["-o", "IdentitiesOnly=yes", "-i", str(key)]
        if settings.known_hosts is not None:
            ssh += ["-o", f"UserKnownHostsFile={settings.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if settings.ssh_config is not None:
            ssh += ["-F", str(settings.ssh_config)]
        env["GIT_SSH_COMMAND"] = seam.command_line(ssh)  # git runs it with sh
        if self._token is not None:
            pair = base64.b64encode(f"{settings.repo_token_user}:{self._token}".encode()).decode()
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                       GIT_CONFIG_VALUE_0=f"Authorization: Basic {pair}")
        return env

    def _scrub(self, text: str) -> str:
        text = " ".join(text.split())[:400]
        if self._token:
            text = text.replace(self._token, "***")
        return text

    def _git(self, *args: str, timeout: float = FETCH_TIMEOUT) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, env=self._env(), timeout=timeout,
                                  check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise RepoUnreachable(f"declarations repository {self.url}: git {args[0]} timed out") from exc
        except OSError as exc:
            raise RepoUnreachable(f"cannot run git: {exc}") from exc

    def fetch(self) -> str | None:
        """Bring the mirror up to the Git host's branches; returns the branch tip fetched (None
        when the branch does not exist there). Raises RepoUnreachable."""
        if not (self.mirror / "HEAD").exists():
            self.mirror.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            done = self._git("init", "--quiet", "--bare", str(self.mirror))
            if done.returncode != 0:
                raise DeclarationError(f"cannot create the mirror {self.mirror}: {self._scrub(done.stderr)}")
        done = self._git("-C", str(self.mirror), "fetch", "--quiet", "--prune", "--no-tags", "--", self.url, REFSPEC)
        if done.returncode != 0:
            raise RepoUnreachable(f"declarations repository {self.url} unreachable: {self._scrub(done.stderr)}")
        tip = self._git("-C", str(self.mirror), "rev-parse", "--verify", "--quiet",
                        f"refs/heads/{self.settings.branch}^{{commit}}")
        return tip.stdout.strip() or None

    def push(self, commit: str, expected: str) -> None:
        """Make `commit` the Git host's branch tip, only as a fast-forward of `expected` (what
        was fetched): a branch that moved meanwhile is PushRejected, nothing pushed; then the
        mirror's branch follows."""
        branch = f"refs/heads/{self.settings.branch}"
        done = self._git("-C", str(self.mirror), "push", "--porcelain", "--quiet", "--", self.url,
                         f"{commit}:{branch}")
        if done.returncode != 0:
            text = self._scrub(done.stdout + " " + done.stderr)
            if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
                raise PushRejected(f"{self.settings.branch} moved on {self.url}; nothing was pushed")
            raise RepoUnreachable(f"cannot push to {self.url}: {text}")
        moved = self._git("-C", str(self.mirror), "update-ref", branch, commit, expected)
        if moved.returncode != 0:  # a fetch moved it meanwhile; the next fetch settles it
            self.fetch()


def _may_carry_token(url: str) -> bool:
    """A token travels over HTTPS, or plain HTTP to this machine only (a local proxy, tests)."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "https":
        return True
    if parts.scheme.lower() != "http":
        return False
    try:
        return ipaddress.ip_address((parts.hostname or "").strip("[]")).is_loopback
    except ValueError:
        return parts.hostname == "localhost"


def fetched(settings: Settings) -> bool:
    """The mirror holds the branch: a fetch has succeeded at least once."""
    mirror = settings.local_repo
    if not (mirror / "HEAD").exists():
        return False
    done = subprocess.run(["git", "-C", str(mirror), "rev-parse", "--verify", "--quiet",
                           f"refs/heads/{settings.branch}"], capture_output=True, check=False)
    return done.returncode == 0
