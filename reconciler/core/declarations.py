"""Desired state: the model of a `sites.d/*.toml` declaration and its validation (`SiteDeclaration`),
an invalid file (`InvalidSite`) and a commit's set of them (`Declarations`). Pure. The files are
parsed in `core/declaration_files.py` (`engine.source` reads them from a commit). Every
declaration is validated before anything runs; an invalid one is reported and skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from reconciler.core.health import HealthCheck
from reconciler.core.layers import Origin, check_template_name
from reconciler.core.layout import parse_release
from reconciler.core.site_env import SiteEnv
from reconciler.core.site_values import (
    LOCAL_REFUSED as LOCAL_REFUSED,  # re-exported: they began here
)
from reconciler.core.site_values import (
    LOCAL_SERVER,
    check_branch,
    check_domain,
    check_entries,
    check_server,
    holding_entry,
    inside_entry,
)
from reconciler.core.siteref import COMMIT_RE as _COMMIT_RE
from reconciler.core.siteref import SiteRef as SiteRef  # re-exported: it began here
from reconciler.core.text import printable as printable  # re-exported: it began here
from reconciler.settings_file import url_credentials

SITES_DIR = "sites.d"
DEFAULT_BASE_PATH = "/home/brokeforge"
DEFAULT_SHARED = ("storage", ".env", "vendor", "node_modules")
MAX_FILE_BYTES = 64 * 1024  # a declaration is a few lines; anything bigger is a mistake or a bomb
MAX_NESTING = 32            # brackets/braces deep: tomllib recurses, and a bomb must not crash the pass
MAX_ERRORS = 20             # per file: the rest are summarised, so status stays readable

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHP_RE = re.compile(r"[0-9]+\.[0-9]+")
DEFAULT_BRANCH = "main"


class SiteDeclaration(BaseModel):
    """One validated `sites.d/<domain>.toml`."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    domain: str = Field(
        description="The site's lower-case DNS name; taken from the "
        'file name (sites.d/<domain>.toml) and, if given, must equal it.')
    # with `servers`, filled from its first entry
    server: str = Field(
        description='"local" (only with allow_local), [user@]host[:port], or an ssh_config '
        'Host alias. Exactly one of server and servers.')
    base_path: str = Field(
        default=DEFAULT_BASE_PATH, description='Where deployments/ and the site symlink '
        'live: a plain absolute path of [A-Za-z0-9._/-].')
    repository: str = Field(
        description="The app's git URL or absolute path as reachable "
        'from the server (which clones it); never with credentials.')
    # At most one of branch / tag / commit; with none of them the site follows branch "main"
    # (`_default_branch`), so exactly one is set on every validated declaration (`ref`).
    branch: str | None = Field(
        default=None, description='The branch followed (default "main" when no tag or '
        'commit is given). At most one of branch, tag, commit.')
    tag: str | None = Field(
        default=None, description='Instead of a branch: deploy the commit this tag names; a moved tag is deployed.')
    commit: str | None = Field(
        default=None, description='Instead of a branch: deploy exactly this commit '
        '(40 or 64 lower-case hex digits) and never move.')
    script: str = Field(
        default="", description='Shell code run in the new release before it goes live: it stops at the first failing '
                    'command, and each command is traced into the log unless trace is false.')
    pin: str | None = Field(
        default=None, description='A release name ddMMYYYY-HHMMSS to hold the '
        'site on; written by `rollback`, removed by `unpin`.')
    keep: int = Field(
        default=14,
        description='Successful releases kept by pruning (at least 1); the active and pinned ones are always kept.')
    keep_failed: int = Field(
        default=3, description='Failed releases kept for their logs (0 or more); they never count towards keep.')
    shared: list[str] = Field(
        default=list(DEFAULT_SHARED), description='Paths linked from deployments/<domain>/shared/ into '
        "every release; relative, no '..'.")
    php: str | None = Field(
        default=None, description='e.g. "8.3": after every switch run `sudo service php8.3-fpm reload`.')
    reload: str | None = Field(
        default=None, description='Shell code run in the release after every '
        'switch (overrides php); a failure leaves the site Degraded.')
    # `sh -x` writes every command of `script` into deployment.log with its variables expanded,
    # secrets read from `.env` included; `trace = false` runs it with `sh -e` only. Not part of
    # the build key: turning tracing off or on does not rebuild.
    trace: bool = Field(
        default=True,
        description='false: run script without tracing its commands, so expanded variables (secrets) stay '
                    'out of the log.')
    health: HealthCheck | None = Field(
        default=None, description='A [health] table: checked on the server after every '
        'switch (a failure switches back) and at every poll.')
    # One site on many servers: instead of `server`, every server it is deployed to,
    # first one first. `server` then names the first of them (it is what single-server code,
    # tables and grouping read); `targets` is the whole list either way.
    servers: list[str] | None = Field(
        default=None,
        description='Instead of server: every server the site is deployed to, first listed first (one rollout).')
    # Code run on exactly one server per deploy (the first listed), after its build and before
    # any switch: migrations. Not part of the build key (it changes the database, not the release).
    script_once: str | None = Field(
        default=None, description='Shell code run once per release on the first '
        'listed server, after its build and before any switch.')
    # Fleet defaults and templates (core.layers): the keys of templates/<name>.toml, under the
    # site's own. Kept on the site only to name it (`show`, `diff`); the effective keys are the
    # site's fields, so a template's `script` is in the build key like the site's own.
    template: str | None = Field(
        default=None, description="Take the keys of templates/<name>.toml; the site's own keys win.")

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_template_name(value)):
            raise ValueError(problem)
        return value

    # -- the site's encrypted environment (sites.d/<domain>.env.age) --
    # What follows a changed `shared/.env` on a server: "reload" runs the reload command,
    # "redeploy" builds a fresh release. Not part of the build key.
    env_change: Literal["reload", "redeploy"] = Field(
        default="reload", description='What follows a changed shared/.env: "reload" runs '
        'the reload command, "redeploy" builds a fresh release.')
    # The decrypted env file, attached by the engine (engine/unsealing.py, `with_env`): private,
    # so never a key of the TOML file, nor in a dump or a repr (it is a secret); it takes part
    # in equality, so a changed env file is a changed site.
    _env: SiteEnv | None = PrivateAttr(default=None)

    @property
    def env(self) -> SiteEnv | None:
        return self._env

    def with_env(self, env: SiteEnv | None) -> SiteDeclaration:
        """This declaration with its decrypted env file."""
        copy = self.model_copy()
        copy._env = env
        return copy

    # --- copy_from_previous (per-release dependencies) ---------------------------------------
    # Directories (vendor, node_modules) copied from the live release into a new one after its
    # shared links and before its script, so `composer install` has little left to do while each
    # release keeps dependencies of its own: a rollback runs old code with its old vendor/. A path
    # listed here is not shared: it is taken out of `shared` (the default list included, so
    # `copy_from_previous = ["vendor"]` needs no edit of `shared`). Part of the build key.
    copy_from_previous: list[str] = Field(
        default=[], description='Directories copied from the live release into each '
        'new one before script; taken out of shared.')

    @model_validator(mode="before")
    @classmethod
    def _copied_is_not_shared(cls, data: Any) -> Any:
        """A path copied from the previous release is not shared: `shared` is what is linked."""
        if not isinstance(data, dict) or not isinstance(copied := data.get("copy_from_previous"), list):
            return data
        shared = data.get("shared", list(DEFAULT_SHARED))
        if not isinstance(shared, list):
            return data
        return {**data, "shared": [entry for entry in shared if entry not in copied]}

    @field_validator("copy_from_previous")
    @classmethod
    def _copy_from_previous(cls, value: list[str], info: ValidationInfo) -> list[str]:
        check_entries(value)
        # Copying into a shared link would write into shared/; linking inside a copy, the same.
        shared = set(info.data.get("shared") or ())
        for entry in value:
            inner, outer = inside_entry(entry, shared), holding_entry(entry, shared)
            if inner or outer:
                raise ValueError(f"entry {entry!r} overlaps shared entry {inner or outer!r}: a path is "
                                 "either shared or copied from the previous release")
        return value

    @model_validator(mode="before")
    @classmethod
    def _one_server_form(cls, data: Any) -> Any:
        """Exactly one of `server` and `servers`; `servers` fills `server` with its first entry.
        A list that is not usable is reported once, at `servers` (`server` gets a stand-in that
        passes, only so the same mistake is not reported twice: the site is Invalid anyway)."""
        if not isinstance(data, dict) or "servers" not in data:
            return data
        if "server" in data:
            raise ValueError("give either server or servers, not both")
        servers = data["servers"]
        first = servers[0] if isinstance(servers, list) and servers and isinstance(servers[0], str) else None
        usable = first is not None and check_server(first) is None
        return {**data, "server": first if usable else "reported-at-servers"}

    @field_validator("servers")
    @classmethod
    def _servers(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must name at least one server")
        for entry in value:
            if problem := check_server(entry):
                raise ValueError(f"{entry!r} is not a usable server: {problem}")
        if len(set(value)) != len(value):
            twice = sorted({entry for entry in value if value.count(entry) > 1})
            raise ValueError("lists " + ", ".join(repr(t) for t in twice) + " more than once")
        return value

    @field_validator("script_once")
    @classmethod
    def _script_once(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    @property
    def targets(self) -> tuple[str, ...]:
        """Every server this site is deployed to, first listed first."""
        return tuple(self.servers) if self.servers else (self.server,)

    @model_validator(mode="before")
    @classmethod
    def _default_branch(cls, data: Any) -> Any:
        """Neither branch nor tag nor commit: the site follows "main"."""
        if isinstance(data, dict) and all(data.get(key) is None for key in ("branch", "tag", "commit")):
            return {**data, "branch": DEFAULT_BRANCH}
        return data

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        if problem := check_domain(value):
            raise ValueError(f"not a lower-case DNS name: {problem}")
        return value

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if problem := check_server(value):
            raise ValueError(f"not a usable server: {problem}")
        return value

    @field_validator("base_path")
    @classmethod
    def _base_path(cls, value: str) -> str:
        if not value.startswith("/") or _CONTROL.search(value):
            raise ValueError("must be an absolute path without control characters")
        # A plain path: it also lands in generated config (`reconciler nginx`), where ';', '{', '#',
        # quotes, spaces or '$' would be syntax.
        if bad := sorted(set(re.sub(r"[A-Za-z0-9._/-]", "", value))):
            raise ValueError("may only contain letters A-Z a-z, digits and . _ - / (not "
                             + " ".join(repr(ch) for ch in bad[:8]) + ("..." if len(bad) > 8 else "") + ")")
        if any(part in ("..", ".") for part in value.split("/")) or value.rstrip("/") == "":
            raise ValueError("must not contain '.' or '..' components or be '/'")
        return value.rstrip("/")

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not value or value.startswith("-"):
            raise ValueError("must not be empty or start with '-'")
        if re.search(r"\s", value) or _CONTROL.search(value):
            raise ValueError("must not contain whitespace or control characters")
        # git's ext:: and fd:: transports run commands; a declaration is not the place for code.
        if value.lower().startswith(("ext::", "fd::")):
            raise ValueError("the ext:: and fd:: transports are not allowed")
        # A host that starts with '-' reaches ssh as an option (git@-oProxyCommand=...:x.git).
        if re.search(r"(^|@|//|\[)-", value):
            raise ValueError("the host part must not start with '-'")
        # Never quoted back: the message is printed (validate, status, notifications).
        if why := url_credentials(value):
            raise ValueError(f"must not hold credentials, here {why}: they would show in process lists, "
                             ".git/config and status; use an SSH key on the server (git@host:path, or an "
                             "ssh_config Host alias) or a git credential helper configured on the server")
        return value

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_branch(value)):
            raise ValueError(f"not a valid git branch name: {problem}")
        return value

    # The conflict is reported at the later key (tag, commit), with its line; fields validate in
    # declaration order, so `info.data` holds branch (and tag) when they were given and valid.
    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("branch") is not None:
            raise ValueError("give at most one of branch, tag and commit")
        if problem := check_branch(value, "tag"):
            raise ValueError(f"not a valid git tag name: {problem}")
        return value

    @field_validator("commit")
    @classmethod
    def _commit(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if info.data.get("branch") is not None or info.data.get("tag") is not None:
            raise ValueError("give at most one of branch, tag and commit")
        if not _COMMIT_RE.fullmatch(value):
            raise ValueError("must be a full commit id: 40 (or 64) lower-case hex digits")
        return value

    @field_validator("script", "reload")
    @classmethod
    def _code(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL")
        return value

    @field_validator("pin")
    @classmethod
    def _pin(cls, value: str | None) -> str | None:
        if value is not None and parse_release(value) is None:
            raise ValueError("must be a release name ddMMYYYY-HHMMSS with a real date and time")
        return value

    @field_validator("keep")
    @classmethod
    def _keep(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("keep_failed")
    @classmethod
    def _keep_failed(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 or more")
        return value

    @field_validator("shared")
    @classmethod
    def _shared(cls, value: list[str]) -> list[str]:
        return check_entries(value)

    @field_validator("php")
    @classmethod
    def _php(cls, value: str | None) -> str | None:
        if value is not None and not _PHP_RE.fullmatch(value):
            raise ValueError("must look like 8.3")
        return value

    @property
    def ref(self) -> SiteRef:
        """What the site deploys from (exactly one of branch, tag, commit is set)."""
        if self.commit is not None:
            return SiteRef("commit", self.commit)
        if self.tag is not None:
            return SiteRef("tag", self.tag)
        return SiteRef("branch", self.branch or DEFAULT_BRANCH)

    @property
    def head_key(self) -> tuple[str, str] | None:
        """(repository, ref) the probe resolves for this site; None when nothing is resolved:
        a pinned site (it holds its release) or a commit site (the declaration is the commit)."""
        git_ref = self.ref.git_ref
        return (self.repository, git_ref) if self.pin is None and git_ref is not None else None

    @property
    def reload_command(self) -> str | None:
        if self.reload is not None:
            return self.reload or None
        if self.php is not None:
            return f"sudo service php{self.php}-fpm reload"
        return None

    @property
    def build_key(self) -> str:
        """Hash of what, beside the commit, makes a release: the script, the shared list and the
        paths copied from the previous release."""
        build: dict[str, Any] = {"script": self.script, "shared": self.shared}
        if self.copy_from_previous:  # only when set: every other site keeps its build key (no rebuild)
            build["copy_from_previous"] = self.copy_from_previous
        payload = json.dumps(build, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class InvalidSite:
    domain: str
    file: str
    errors: tuple[str, ...]
    server: str = ""

    @property
    def message(self) -> str:
        return "; ".join(self.errors)


@dataclass
class Declarations:
    commit: str | None
    sites: dict[str, SiteDeclaration] = field(default_factory=dict)
    invalid: dict[str, InvalidSite] = field(default_factory=dict)
    # Set when the tip was not applied (e.g. unsigned): why, shown in every site's status.
    notice: str = ""
    # The line of the `server` key of each valid site on server "local" (for `refuse_local`).
    local_lines: dict[str, int] = field(default_factory=dict)
    # Each site's `sites.d/<domain>.env.age` of this commit, encrypted (engine/site_env.py opens them).
    sealed: dict[str, bytes] = field(default_factory=dict)
    # Where each key of each valid site came from: its file, its template or the defaults.
    origins: dict[str, dict[str, Origin]] = field(default_factory=dict)

    @property
    def errors(self) -> list[str]:
        return [line for site in self.invalid.values() for line in site.errors]


def refuse_local(decls: Declarations, allow_local: bool) -> Declarations:
    """Where declarations meet the settings: unless `allow_local`, a site on server "local" is
    Invalid (its script would run as the reconciler user on the reconciler's host, with its SSH
    key, tokens and every server in reach). Returns `decls` itself when nothing is refused, else
    a copy with fresh dicts (the caller's, e.g. a cache, stay as they were)."""
    if allow_local:
        return decls
    local = {domain for domain, site in decls.sites.items() if LOCAL_SERVER in site.targets}
    if not local:
        return decls
    invalid = dict(decls.invalid)
    for domain in local:
        filename = f"{SITES_DIR}/{domain}.toml"
        line = decls.local_lines.get(domain, 1)
        origin = decls.origins.get(domain, {}).get("server")
        where = origin.file if origin is not None else filename  # the defaults or a template set it
        invalid[domain] = InvalidSite(domain, filename, (f"{where}:{line}: server: {LOCAL_REFUSED}",),
                                      LOCAL_SERVER)
    return dataclasses.replace(decls, sites={d: s for d, s in decls.sites.items() if d not in local},
                               invalid=dict(sorted(invalid.items())), local_lines={},
                               origins={d: o for d, o in decls.origins.items() if d not in local})
