"""What a `[[notify]]` event says: its fields, and `text`, the one line a person reads.

Pure: no I/O, no clock, no store. The daemon reads the rows (the site's, its deployments') and
passes them in; webhooks.py stamps `at` and delivers, and its docstring says what each field
means. Every event carries every key of FIELDS, null where it does not apply, so a receiver
never has to guess which keys an event has. The one rule to keep in mind: `release`/`commit`
(and the fields about that deployment) name what the event is about, `live_*` what the site
serves now; for `failed` they differ, since the failed build never went live.

`text` names the site, the server, the releases (from → to, short commits), the commit's
subject and author, the build's duration, why it failed and what is still live, and links
the dashboard. Not the log API: a browser following a link from a chat service does not send
the dashboard's SameSite=Strict cookie, so that link would only answer 401; `log_url` is there
for scripts holding the api_token.

`text` quotes what others wrote: a commit's subject and author (whoever can push to an app
repository), the failing line of a build's output and a health check's detail (the server). In
a chat service these must neither ping people nor hide a link behind words, so `summary` passes
the whole line through `neutral` once, whatever field a part came from (see its docstring).
The other fields stay as they were written: they are data for machines, not chat markup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, assert_never

from reconciler.config import NotifyEvent
from reconciler.core.plan import Activate, Deploy
from reconciler.core.status import DeployStatus
from reconciler.engine.outcome import Applied

FIELDS: tuple[str, ...] = (
    "event", "domain", "server", "repository", "sync", "health", "message",
    "release", "commit", "commit_subject", "commit_author", "deployment_id",
    "duration_ms", "exit_status", "trigger", "requested_by",
    "live_release", "live_commit", "previous_release", "previous_commit",
    "log_url", "dashboard_url", "at", "text",
)
# Events about a build (duration, exit status, trigger), and events that moved the site link (previous_*).
BUILDS = frozenset({NotifyEvent.DEPLOYED, NotifyEvent.FAILED})
SWITCHES = frozenset({NotifyEvent.DEPLOYED, NotifyEvent.ROLLED_BACK})
SHORT = 12                           # commit abbreviation, as the CLI and the log show it
REASON_MAX = 240                     # the part of a (failure) message the line quotes
TEXT_MAX = 1000                      # chat services cut long messages; ours stay well below

Row = Mapping[str, Any]
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}
_BLANKS = re.compile(r"[\s\x00-\x1f\x7f-\x9f]+")
ZWSP = "\u200b"
# An @ that is not yet followed by a zero-width space; `](` of a markdown link; angle brackets.
_MARKUP = re.compile(r"@(?!\u200b)|\](?=\()|[<>]")
_INERT = {"@": "@" + ZWSP, "]": "]" + ZWSP, "<": "\u2039", ">": "\u203a"}


@dataclass(frozen=True)
class Scene:
    """One site as the daemon sees it after a round: what every event of that round is built
    from. `live` is the deployment row of the live release (None when unknown); `previous` the
    (release, commit) live at the daemon's previous look, None when it had none."""

    domain: str
    server: str
    sync: str
    health: str
    message: str
    live_release: str | None
    live_commit: str | None
    live: Row | None = None
    previous: tuple[str | None, str | None] | None = None
    endpoint: str | None = None


def endpoint(listen: str | None, http_hosts: Sequence[str] = ()) -> str | None:
    """http://authority of the daemon's HTTP endpoint as people reach it: the first `http_hosts`
    name (the reverse proxy's, when there is one), else `listen` unless it is a wildcard
    address (no name to give then); None without an endpoint."""
    if not listen:
        return None
    if http_hosts:
        return f"http://{http_hosts[0]}"
    host, _, port = listen.rpartition(":")
    if host in _WILDCARDS:
        return None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def failed_build(rows: Iterable[Row], applied: Sequence[Applied], commit: str | None,
                 build_key: str) -> Row | None:
    """The deployment a `failed` event is about: the build (or activation) that failed in this
    round, else the remembered failure of (commit, build key) that keeps the site Failed.
    `rows` are the site's deployments, newest first."""
    rows = list(rows)
    for done in applied:
        if done.failed and isinstance(done.action, Deploy | Activate):
            release = done.action.release
            # A site on many servers has a row per server under one release name: the failed one.
            named = [row for row in rows if row.get("release") == release]
            found = next((row for row in named if row.get("status") == DeployStatus.FAILED), None) or next(
                iter(named), None)
            if found is not None:
                return found
    return next((row for row in rows if row.get("status") == DeployStatus.FAILED and row.get("commit_sha") == commit
                 and commit is not None and row.get("build_key") == build_key and not row.get("transient")
                 and not row.get("forgiven")), None)


def fields(event: NotifyEvent, scene: Scene, failed: Row | None = None,
           desired_commit: str | None = None) -> dict[str, Any]:
    """The event's fields, but `event`, `domain`, `at` and `text` (see `payload`). For `failed`,
    `failed` is the failed deployment's row (failed_build) and `desired_commit` the commit the
    site wants, used when there is no such row."""
    if event == NotifyEvent.FAILED:
        subject = failed
        release = failed.get("release") if failed else None
        commit = failed.get("commit_sha") if failed else desired_commit
    else:
        subject = scene.live
        release, commit = scene.live_release, scene.live_commit
    values: dict[str, Any] = {
        # A failed build names the server it failed on (a site on many servers has a row per server).
        "server": (failed.get("server") or scene.server) if event == NotifyEvent.FAILED and failed else scene.server,
        "sync": str(scene.sync), "health": str(scene.health), "message": scene.message,
        "release": release, "commit": commit, "live_release": scene.live_release, "live_commit": scene.live_commit,
    }
    if subject is not None:
        values.update(commit_subject=subject.get("commit_subject") or None,
                      commit_author=subject.get("commit_author") or None, deployment_id=subject.get("id"))
        if event in BUILDS:
            values.update(duration_ms=subject.get("duration_ms"), exit_status=subject.get("exit_status"),
                          trigger=subject.get("trigger") or None, requested_by=subject.get("requested_by") or None)
            if event == NotifyEvent.FAILED and subject.get("message"):
                values["reason"] = subject["message"]
    if event in SWITCHES and scene.previous is not None and scene.previous != (release, commit):
        values.update(previous_release=scene.previous[0], previous_commit=scene.previous[1])
    if scene.endpoint is not None:
        values["dashboard_url"] = scene.endpoint + "/"
        if values.get("deployment_id") is not None:
            # A domain is a validated DNS name: nothing in it needs escaping in a URL path.
            values["log_url"] = f"{scene.endpoint}/api/sites/{scene.domain}/deployments/{values['deployment_id']}/log"
    return values


def cause_fields(server: str | None, message: str, endpoint: str | None = None,
                 repository: str | None = None) -> dict[str, Any]:
    """The fields of an `unreachable` or `recovered` event about a cause, not a site (no domain):
    a server (`server` named), an app repository (`repository` named) or the declarations
    repository (neither); `message` says what happened."""
    values: dict[str, Any] = {"server": server, "repository": repository, "message": message}
    if endpoint is not None:
        values["dashboard_url"] = endpoint + "/"
    return values


def payload(event: NotifyEvent, domain: str | None, at: str, **known: Any) -> dict[str, Any]:
    """The event as delivered: every key of FIELDS (None where unknown), in that order, `text`
    last. `reason` (the failed build's own message, more precise than the site's) only shapes
    `text`. Unknown keys, and an event that is not a NotifyEvent, are a programming error."""
    event = NotifyEvent(event)  # mypy rejects a misspelt member; this, a misspelt string at run time
    reason = known.pop("reason", None)
    unknown = set(known) - set(FIELDS)
    if unknown:
        raise TypeError(f"not notification fields: {sorted(unknown)}")
    body: dict[str, Any] = dict.fromkeys(FIELDS)
    body.update(known, event=event, domain=domain, at=at)
    body["text"] = summary(body, reason)
    return body


def summary(body: Mapping[str, Any], reason: str | None = None) -> str:
    """The one-line summary of an event (see the module docstring)."""
    event, domain = NotifyEvent(body["event"]), body.get("domain")
    server = f" on {body['server']}" if body.get("server") else ""
    new = _release(body.get("release"), body.get("commit"))
    about = _about(body.get("commit_subject"), body.get("commit_author"))
    before = _release(body.get("previous_release"), body.get("previous_commit"))
    moved = f"{before} → {new}" if before else new
    build = _build(body, "in" if event == NotifyEvent.DEPLOYED else "after")
    live = _release(body.get("live_release"), body.get("live_commit")) or "nothing"
    why = _clip(reason or body.get("message") or "")
    match event:  # one sentence per event; mypy --strict checks that none is missing
        case NotifyEvent.DEPLOYED:
            line = f"{domain} deployed{server}: {moved}{about}{build}"
        case NotifyEvent.FAILED:
            what = f"{new}{about}{build}" if new else ""
            line = f"{domain} FAILED{server}: " + ": ".join(p for p in (what, why or "failed") if p) + f". Live: {live}"
        case NotifyEvent.ROLLED_BACK:
            line = f"{domain} rolled back{server}: {moved}{about}"
        case NotifyEvent.DEGRADED:
            line = f"{domain} DEGRADED{server}: {why or 'degraded'}. Live: {live}"
        case NotifyEvent.UNREACHABLE:
            line = f"{_cause(body)} UNREACHABLE: {why or 'unreachable'}"
        case NotifyEvent.RECOVERED if domain is None:
            line = f"{_cause(body)} reachable again"
        case NotifyEvent.RECOVERED:
            was = f" (was {reason.upper()})" if reason else ""
            line = f"{domain} recovered{server}: {body.get('sync')}/{body.get('health')}{was}. Live: {live}"
        case _:
            assert_never(event)
    if body.get("dashboard_url"):
        line += f". Dashboard: {body['dashboard_url']}"
    # Neutral first, then cut: cutting a tail off can only remove markup, never make it.
    return _clip(neutral(line), TEXT_MAX)


def _cause(body: Mapping[str, Any]) -> str:
    """What an event without a site is about: a server, an app repository, or the declarations
    repository."""
    if body.get("domain"):
        return str(body["domain"])
    if body.get("server"):
        return f"server {body['server']}"
    return f"repository {body['repository']}" if body.get("repository") else "declarations repository"


def neutral(text: str) -> str:
    """`text` made inert in every chat service apprise sends to, one rule per kind of markup:

    * mentions: every `@` is followed by a zero-width space (U+200B), so `@everyone`, `@here`,
      `@channel`, `@all`, Discord's `<@123>`/`<@&456>`, Zulip's `@**all**` ping nobody and
      read the same;
    * masked links: a zero-width space between `]` and `(`, so `[Approve](https://evil)` (and
      `![..](..)`) is shown as typed, not as a link whose target the reader cannot see;
    * angle brackets become the single angle quotation marks U+2039/U+203A: Slack's `<!here>`,
      `<!channel>`, `<@U123>` and `<https://evil|Dashboard>` (which Mattermost's
      Slack-compatible webhooks also understand), Teams' `<at>`, Google Chat's `<users/all>`
      and HTML lose their syntax. A zero-width space after `<` would not do: Mattermost would
      still turn `<x|text>` into a link.

    Backslash escapes would not do either: the same line goes to plain-text services (Slack with
    mrkdwn off, e-mail, Telegram's HTML), which would show the backslashes. Idempotent."""
    return _MARKUP.sub(lambda match: _INERT[match.group()[0]], text)


def _build(body: Mapping[str, Any], word: str) -> str:
    """", in 12.3 s (redeploy by alice)": the build's duration and what asked for it."""
    took = _duration(body.get("duration_ms"))
    text = f", {word} {took}" if took else ""
    cause = _clip(str(body.get("trigger") or ""), 60)
    if cause:
        by = _clip(str(body.get("requested_by") or ""), 60)
        text += f" ({cause}" + (f" by {by})" if by else ")")
    return text


def _release(release: Any, commit: Any) -> str:
    short = str(commit)[:SHORT] if commit else ""
    if release and short:
        return f"{release} ({short})"
    return str(release or short)


def _about(subject: Any, author: Any) -> str:
    """ "subject" by Name: the author without the address (chat is not the place for it)."""
    text = f' "{_clip(str(subject), 120)}"' if subject else ""
    if author:
        name = str(author).split(" <", 1)[0].strip() or str(author)
        text += f" by {_clip(name, 80)}"
    return text


def _duration(ms: Any) -> str:
    if not isinstance(ms, int) or isinstance(ms, bool) or ms < 0:
        return ""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _clip(text: str, limit: int = REASON_MAX) -> str:
    """One line (control characters and newlines become spaces), at most `limit` characters."""
    line = _BLANKS.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
