"""The git push webhook, POST /hooks/git: which deliveries are believed, which are news, and
which sites (or the declarations themselves) they wake.

GitHub (X-Hub-Signature-256) and Gitea/Forgejo (X-Gitea-Signature, X-Forgejo-Signature) sign
the body with `webhook_secret`. GitLab's X-Gitlab-Token is the secret itself, sent in clear on
every delivery: accepted only with `webhook_gitlab_token = true` (else 401 saying so). An
accepted delivery is remembered for an hour (at most 10,000, oldest forgotten first) by its
delivery id (X-GitHub-Delivery, X-Gitea-Delivery, X-Forgejo-Delivery, X-Gogs-Delivery,
GitLab's Idempotency-Key and X-Gitlab-Event-UUID) AND by the digest of its body: the signature
covers the body only, so a replay with a fresh id header is still the same body. A replay is
answered 200 {"duplicate": true} and triggers nothing. A signed delivery without any id header
is accepted (older forges, hand-made hooks) and deduplicated by its body alone; that is logged.
After the hour a replay triggers a poll, which only reads the declarations branch: the worst it
can do is the work of one pass.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from reconciler.core.repository_url import repository_key
from reconciler.service.http.context import WebContext, refused
from reconciler.service.http.digests import digest, header_bytes, same

log = logging.getLogger(__name__)

REPLAY_WINDOW = 3600.0
MAX_DELIVERIES = 10_000
# Delivery ids: GitHub; Gitea (which also sends X-GitHub-Delivery and X-Gogs-Delivery);
# Forgejo; GitLab (Idempotency-Key: the same across retries of one event; X-Gitlab-Event-UUID).
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Forgejo-Delivery", "X-Gogs-Delivery",
                    "Idempotency-Key", "X-Gitlab-Event-UUID")
SIGNATURE_HEADERS = ("X-Hub-Signature-256", "X-Gitea-Signature", "X-Forgejo-Signature", "X-Gitlab-Token")
_URL_KEYS = ("clone_url", "ssh_url", "git_url", "html_url", "url", "git_ssh_url", "git_http_url", "http_url",
             "web_url")


class Deliveries:
    """Webhook deliveries accepted in the last `window` seconds, at most `limit` keys (the oldest
    forgotten first). Keys are digests: memory per delivery is fixed whatever the headers hold."""

    def __init__(self, window: float = REPLAY_WINDOW, limit: int = MAX_DELIVERIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window, self.limit, self.clock = window, limit, clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def _expire(self, now: float) -> None:
        # Every entry lives `window` seconds from its insertion: insertion order is expiry order.
        while self._seen and next(iter(self._seen.values())) <= now:
            self._seen.popitem(last=False)

    def seen(self, keys: Iterable[bytes]) -> bool:
        self._expire(self.clock())
        return any(key in self._seen for key in keys)

    def remember(self, keys: Iterable[bytes]) -> None:
        now = self.clock()
        self._expire(now)
        for key in keys:
            self._seen[key] = now + self.window
            self._seen.move_to_end(key)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)


def delivery_keys(body: bytes, headers: Any) -> tuple[list[bytes], bool]:
    """What identifies a delivery: its id headers' values and its body; and whether it had an id."""
    ids = {header_bytes(value) for name in DELIVERY_HEADERS if (value := headers.get(name, "").strip())}
    return [digest(b"id", value) for value in sorted(ids)] + [digest(b"body", body)], bool(ids)


def gitlab_token_only(headers: Any) -> bool:
    """True when the delivery authenticates by GitLab's clear-text X-Gitlab-Token alone."""
    return not any(headers.get(name, "") for name in ("X-Hub-Signature-256", "X-Gitea-Signature",
                                                      "X-Forgejo-Signature")) \
        and bool(headers.get("X-Gitlab-Token", ""))


def verify_webhook(secret: str, body: bytes, headers: Any) -> bool:
    """GitHub (X-Hub-Signature-256), Gitea/Forgejo (X-Gitea-Signature) HMAC-SHA256 of the body;
    GitLab (X-Gitlab-Token) sends the secret itself (whether that is accepted at all is the
    handler's decision: `webhook_gitlab_token`)."""
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = headers.get("X-Hub-Signature-256", "")
    if github:
        return same(github, f"sha256={signature}")
    gitea = headers.get("X-Gitea-Signature", "") or headers.get("X-Forgejo-Signature", "")
    if gitea:
        return same(gitea, signature)
    gitlab = headers.get("X-Gitlab-Token", "")
    if gitlab:
        return same(gitlab, secret)
    return False


def repository_urls(payload: dict[str, Any]) -> set[str]:
    """The repositories (`core.repository_url.repository_key`) a GitHub, GitLab or Gitea push
    payload names, in whichever URL forms it names them."""
    urls: set[str] = set()
    for section in ("repository", "project"):
        part = payload.get(section)
        if isinstance(part, dict):
            for key in _URL_KEYS:
                if isinstance(part.get(key), str):
                    urls.add(repository_key(part[key]))
    return urls


class Hooks:
    """POST /hooks/git of one app, with the memory of the deliveries it accepted."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.deliveries = Deliveries()

    async def git_hook(self, request: web.Request) -> web.Response:
        """POST /hooks/git: a GitHub, GitLab or Gitea push webhook, verified with webhook_secret; polls the
        sites using that repository now."""
        body = await request.read()
        settings = self.ctx.settings()
        secret = settings.webhook_secret
        if secret and gitlab_token_only(request.headers) and not settings.webhook_gitlab_token:
            return refused(401, "X-Gitlab-Token sends the secret itself, in clear, with every delivery: "
                                "refused unless webhook_gitlab_token = true in reconciler.toml")
        if not secret or not verify_webhook(secret, body, request.headers):
            return refused(401, "bad or missing signature")
        keys, has_id = delivery_keys(body, request.headers)
        if self.deliveries.seen(keys):
            log.info("webhook: a delivery already accepted in the last %.0f s came again: ignored", REPLAY_WINDOW)
            return web.json_response({"duplicate": True, "sites": []}, status=200)
        try:
            payload = json.loads(body)
        except ValueError:
            return refused(400, "the body must be JSON")
        self.deliveries.remember(keys)
        if not has_id:
            log.info("webhook: a signed delivery without a delivery id header: accepted, "
                     "deduplicated by its body only")
        return web.json_response(self._wake(repository_urls(payload) if isinstance(payload, dict) else set()),
                                 status=202)

    def _wake(self, keys: set[str]) -> dict[str, Any]:
        """Request the sites whose repository was pushed to, and a fetch of the declarations
        when it is theirs; the answer says which. `keys`: the pushed repositories' keys, compared
        with each declared URL's own (any URL form of one repository matches)."""
        ctx = self.ctx
        decls = ctx.declarations()
        matched = sorted(d for d, s in (decls.sites.items() if decls else []) if repository_key(s.repository) in keys)
        if matched:
            ctx.request(set(matched))
        own = ctx.settings().repo_url
        declarations = own is not None and ctx.fetch is not None and repository_key(own) in keys
        if declarations and ctx.fetch is not None:
            ctx.fetch()  # a push to the declarations: fetch now, the ref watcher does the rest
        answer: dict[str, Any] = {"sites": matched}
        if declarations:
            answer["declarations"] = True
        return answer
