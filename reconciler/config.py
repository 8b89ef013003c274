"""Daemon settings: `--config`, else $RECONCILER_CONFIG, else ./reconciler.toml; flags override."""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reconciler.errors import ConfigError
from reconciler.settings_file import DEFAULT_STATE_DIR, parse_shard, read_settings_file, url_credentials
from reconciler.settings_file import config_file as config_file  # re-exported: it began here
from reconciler.settings_file import is_url as is_url  # re-exported: it began here
from reconciler.token_settings import ApiToken as ApiToken  # re-exported: it began here
from reconciler.token_settings import token_digest as token_digest  # re-exported: it began here
from reconciler.window_settings import Window


class NotifyEvent(StrEnum):
    """The notification events: what `[[notify]] events` names and what the `event` field of a
    delivery says. Values are the contract's strings. It lives here, below `core`, because the
    configuration validates against it; `service` (announce, webhooks, daemon) decides on these
    members, so a misspelt event is a type error, never an event that silently never fires."""

    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    DEGRADED = "degraded"
    UNREACHABLE = "unreachable"  # a server, an app's git host or the declarations repository: once per outage
    RECOVERED = "recovered"      # reachable again; Degraded -> Healthy; Failed -> Synced


NOTIFY_EVENTS: tuple[NotifyEvent, ...] = tuple(NotifyEvent)


class NotifyTarget(BaseModel):
    """A `[[notify]]` entry: where the chosen events go, and in which form.

    `url` says both. An http:// or https:// URL gets each event as a JSON object (every field,
    `text` among them), for machines. Any other scheme is an apprise URL (`slack://`,
    `discord://`, `workflow://` (MS Teams), `mmost://`, `tgram://`, `mailto://`, `json://`, ...): apprise
    delivers the one-line summary `text`, for people. A URL apprise does not recognise is a
    configuration error now, not a failed delivery later. URLs often hold tokens: error
    messages and logs name an entry by its position and `shown`, never by its URL."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    url: str = Field(
        description='http(s):// webhook (the event as JSON) or an apprise '
        'URL such as slack:// or mailto:// (the text line).')
    # The model is strict; this field takes the names as written in TOML and turns them into
    # members (an unknown name is a configuration error naming the allowed ones).
    events: list[Annotated[NotifyEvent, Field(strict=False)]] = Field(
        default=list(NOTIFY_EVENTS), description="The events delivered to this target.")

    @field_validator("url")
    @classmethod
    def _known(cls, value: str) -> str:
        scheme, separator, rest = value.partition("://")
        scheme = scheme.lower()
        if not separator or not rest or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
            raise ValueError("must be an http(s):// webhook URL or an apprise URL such as mmost://host/token")
        if scheme in ("http", "https"):
            parts = urlsplit(value)
            if not parts.hostname:
                raise ValueError(f"a {scheme}:// URL needs a host")
            _ = parts.port  # ValueError when the port is not a port
            return value
        try:
            import apprise  # only configurations with chat targets pay for its import
        except ImportError as exc:
            raise ValueError(f"{scheme}:// needs apprise, which is not installed (pip install apprise)") from exc
        if scheme not in apprise.NotificationManager():  # type: ignore[no-untyped-call]
            raise ValueError(f"apprise knows no service {scheme}://; use an http(s):// webhook or one of "
                             "apprise's service URLs")
        if apprise.Apprise.instantiate(value) is None:
            raise ValueError(f"apprise does not accept this {scheme}:// URL: a token, host or other part "
                             "is missing or malformed")
        return value

    @property
    def chat(self) -> bool:
        """Delivered by apprise (the summary line), not POSTed as a JSON event."""
        return self.url.partition("://")[0].lower() not in ("http", "https")

    @property
    def shown(self) -> str:
        """The URL as logs may show it: scheme://host[:port] of a webhook, only the scheme of an
        apprise URL (whose "host" is often a token, as in tgram://BOT_TOKEN/CHAT)."""
        if self.chat:
            return self.url.partition("://")[0].lower() + "://"
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        try:
            port = f":{parts.port}" if parts.port is not None else ""
        except ValueError:
            port = ""
        return f"{parts.scheme.lower()}://{host}{port}"


class Settings(BaseModel):
    """The daemon's and CLI's settings (reconciler.toml, then flags). Immutable; SIGHUP builds
    a new one."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # The declarations repository: a local path, or a URL (ssh://, git@host:path, https://,
    # file://) of which the reconciler keeps its own mirror under state_dir (`local_repo`).
    repo: Path | str = Field(
        default=Path("."), description='The declarations repository: a local path, or a '
        'URL (ssh://, git@host:path, https://, file://) mirrored under state_dir.')
    repo_identity_file: Path | None = Field(
        default=None, description='SSH key for a repo URL (default: identity_file).')
    repo_token_file: Path | None = Field(
        default=None, description='HTTPS token for a repo URL (else $RECONCILER_REPO_TOKEN).')
    repo_token_user: str = Field(
        default="x-access-token",
        description='The user name sent with the token (GitHub: x-access-token; GitLab: oauth2).')
    repo_interval: float = Field(default=15.0, description='Seconds between fetches of a repo URL.')
    # The name of the single `api_token`: who acts with it (history, a pin commit's author).
    api_token_name: str = Field(
        default="api",
        description="The name of the single api_token: who acts with it (history, a pin commit's author).")
    branch: str = Field(default="main", description="The declarations repository's branch holding desired state.")
    state_dir: Path = Field(default=DEFAULT_STATE_DIR, description='The SQLite database, logs and caches.')
    interval: float = Field(default=60.0, description='Seconds between polls of app branches and drift checks.')
    concurrency: int = Field(
        default=8, description='Sites changing at once (deploys, switches), shared fairly by servers.')
    identity_file: Path | None = Field(
        default=None, description='SSH private key for the servers (else ssh_config and agent defaults).')
    known_hosts: Path | None = Field(default=None, description='Known hosts file; host keys are always verified.')
    ssh_config: Path | None = Field(default=None, description='An ssh_config file (Host aliases, users, ports).')
    # Seconds one remote command may take; the deploy script gets `deploy_timeout`.
    command_timeout: float = Field(default=120.0, description='Seconds one remote command may take.')
    deploy_timeout: float = Field(default=1800.0, description='Seconds a deploy script may take.')
    # Seconds one `git ls-remote` of a probe may take: a git host that does not answer is its
    # sites' error, not the server's (remote/protocol/probing.py head_bounds). None: a quarter of
    # command_timeout, at most 20. At most half of command_timeout.
    git_timeout: float | None = Field(
        default=None, description='Seconds one git ls-remote of a probe may '
        'take (default: a quarter of command_timeout, at most 20).')
    connect_timeout: float = Field(default=15.0, description='Seconds an SSH connection may take to open.')
    # Verified desired state: "off", or "head" (the branch tip must carry an allowed signature).
    require_signed: Literal["off", "head"] = Field(
        default="off", description='"head": only a branch tip with an allowed signature is applied.')
    allowed_signers: Path | None = Field(default=None, description='ssh-keygen ALLOWED SIGNERS file (SSH signatures).')
    gpg_home: Path | None = Field(default=None, description='GnuPG home holding the trusted public keys.')
    # GPG signatures count only from keys at least this trusted in `gpg_home` (git's gpg.minTrustLevel).
    gpg_min_trust: Literal["marginal", "fully", "ultimate"] = Field(
        default="marginal", description='GPG signatures count only from keys at least this trusted in gpg_home.')
    # What rollback/unpin sign their commits with under `require_signed`: an SSH private key file
    # (its public key must be in `allowed_signers`) or a GPG key id in `gpg_home`. Without one they refuse.
    signing_key: Path | None = Field(
        default=None, description='SSH private key that rollback/unpin sign their commits with under require_signed.')
    gpg_signing_key: str | None = Field(
        default=None,
        description='GPG key id in gpg_home that rollback/unpin sign their commits with under require_signed.')
    # The reconciler's age secret key (`age-keygen` output): it decrypts `sites.d/<domain>.env.age`.
    # Its public key belongs in the declarations' `.reconciler/recipients`. None: env files are Invalid.
    age_identity_file: Path | None = Field(
        default=None,
        description='The age secret key that decrypts sites.d/<domain>.env.age (none: env files are Invalid).')
    # `server = "local"` runs a committer's script as the reconciler user on this host, with
    # its keys and tokens in reach: refused unless the operator opts in.
    allow_local: bool = Field(
        default=False,
        description='Allow server = "local" (a committer\'s script runs as the reconciler user on this host).')
    # The daemon's HTTP endpoint (opt-in): metrics, API, dashboard, webhooks.
    listen: str | None = Field(
        default=None,
        description='host:port of the HTTP endpoint (metrics, API, dashboard, webhooks), e.g. "127.0.0.1:9180".')
    # The bearer token for every request but the page, sign-in and webhooks: one (`api_token =
    # "..."`, acting as `api_token_name`), or named ones (`[[api_token]]` tables: ApiToken).
    api_token: str | list[ApiToken] | None = Field(
        default=None, description='The bearer token for the HTTP API: one string, or named [[api_token]] tables.')
    webhook_secret: str | None = Field(default=None, description='HMAC secret of POST /hooks/git.')
    # GitLab sends the secret itself (X-Gitlab-Token), not a signature: accepted only when enabled.
    webhook_gitlab_token: bool = Field(
        default=False, description="Accept GitLab's X-Gitlab-Token (the secret itself) instead of a signature.")
    # Host header values the HTTP endpoint answers besides the `listen` address (e.g. a reverse
    # proxy's name); anything else is refused (DNS rebinding).
    http_hosts: list[str] = Field(
        default=[], description='Host header values the HTTP endpoint answers besides the listen address.')
    # Reverse proxies in front of the HTTP endpoint (addresses or networks, e.g. "127.0.0.1"):
    # from these only, X-Forwarded-For names the client (whose failed sign-ins are throttled)
    # and X-Forwarded-Proto: https makes the session cookie Secure (service/forwarded.py).
    trusted_proxies: list[str] = Field(
        default=[],
        description='Reverse proxies (addresses or networks) whose X-Forwarded-For and -Proto are believed.')
    # The session cookie is always Secure (a TLS proxy in front that sends no X-Forwarded-Proto).
    cookie_secure: bool = Field(default=False, description='Always mark the session cookie Secure.')
    notify: list[NotifyTarget] = Field(default=[], description='[[notify]] tables: where events are delivered.')
    # History (deployment and activation rows) and deployment logs under state_dir/logs older
    # than this many days are forgotten, but never those of a release still on a server nor a
    # site's latest (engine/retention.py). None, the default: history is kept for ever.
    retention_days: int | None = Field(
        default=None, description='Forget history and logs older than this many '
        "days (never a live release's); none: kept for ever.")
    # Deploy windows (`[[window]]`, reconciler/window_settings.py): when deploys may happen; a
    # deploy outside them waits, OutOfSync (core/windows.py), unless `reconcile --override-window`.
    window: list[Window] = Field(default=[], description='[[window]] tables: when deploys may happen.')
    # Past one process: this instance owns only the servers that hash to shard i of n
    # (core/shard.py). "1/1", the default, owns every server.
    shard: str = Field(
        default="1/1", description='This instance owns only the servers of shard i of n ("1/1": every server).')

    @model_validator(mode="after")
    def _token_names(self) -> Settings:
        names = [t.name for t in self.named_tokens]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"api_token names must differ: {', '.join(map(repr, duplicated))} is used twice")
        return self

    @field_validator("api_token_name")
    @classmethod
    def _token_name(cls, value: str) -> str:
        return ApiToken._name(value)

    @field_validator("concurrency", "retention_days")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator("interval", "command_timeout", "deploy_timeout", "connect_timeout", "repo_interval")
    @classmethod
    def _seconds(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _git_timeout(self) -> Settings:
        if self.git_timeout is not None and not 0 < self.git_timeout <= self.command_timeout / 2:
            raise ValueError(f"git_timeout must be positive and at most half of command_timeout "
                             f"({self.command_timeout:g}): the probe's sites need the rest")
        return self

    @model_validator(mode="after")
    def _signers(self) -> Settings:
        if self.require_signed == "head" and self.allowed_signers is None and self.gpg_home is None:
            raise ValueError('require_signed = "head" needs allowed_signers and/or gpg_home')
        return self

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        parse_shard(value)
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError('must be "host:port", e.g. "127.0.0.1:9180"')
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)") from None
        return value

    @field_validator("repo", mode="before")
    @classmethod
    def _repo(cls, value: object) -> object:
        if isinstance(value, str) and not is_url(value):
            return Path(value)
        if isinstance(value, str) and (value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value)):
            raise ValueError("a repository URL must not start with '-' or hold whitespace or control characters")
        # Refused, not stripped: the URL would reach git's argv, the mirror's config and every
        # site's status. The message never quotes the URL (settings_file.url_credentials).
        if isinstance(value, str) and (why := url_credentials(value)):
            raise ValueError(f"a repository URL must not hold credentials, here {why}: give an HTTPS token "
                             "in repo_token_file (or $RECONCILER_REPO_TOKEN), an SSH key in repo_identity_file")
        return value

    @property
    def single_token(self) -> str | None:
        """The one `api_token = "..."` (None: none, or named tokens instead)."""
        return self.api_token if isinstance(self.api_token, str) else None

    @property
    def named_tokens(self) -> list[ApiToken]:
        """The `[[api_token]]` entries ([]: none, or the one token instead)."""
        return self.api_token if isinstance(self.api_token, list) else []

    @property
    def repo_url(self) -> str | None:
        """The declarations repository's URL, when it is not a local path."""
        return self.repo if isinstance(self.repo, str) else None

    @property
    def local_repo(self) -> Path:
        """Where the declarations are read: the repository itself, or the mirror of its URL."""
        return self.state_dir / "declarations.git" if isinstance(self.repo, str) else self.repo

    @property
    def db_path(self) -> Path:
        return self.state_dir / "reconciler.db"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the config file (if any) and apply non-None overrides from the command line."""
    path = config_file(config)
    return validate_settings(read_settings_file(path, overrides), path)


def validate_settings(raw: dict[str, Any], path: Path | None) -> Settings:
    """`raw` (settings_file.read_settings_file) as Settings; ConfigError naming `path` otherwise."""
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        # pydantic prefixes a validator's own message with "Value error, "; the message is ours.
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise ConfigError(f"{path or 'settings'}: " + "; ".join(lines)) from exc
