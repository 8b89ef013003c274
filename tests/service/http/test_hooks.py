"""service/http/hooks.py, the git push webhook: which signatures are believed, what identifies a
delivery, which repositories a payload names (in any URL form a forge uses), and what an accepted
delivery wakes: the sites on the pushed repository, and a fetch when it is the declarations'
own. Units of the module's functions, and POST /hooks/git on the real app in this process
(tests/support/inprocess_app.py). Replays per forge and the GitLab opt-in end to end are in
tests/hostile/test_webhook_replay.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from reconciler.service.http.app import DELIVERIES
from reconciler.service.http.digests import digest
from reconciler.service.http.hooks import (
    delivery_keys,
    gitlab_token_only,
    repository_urls,
    verify_webhook,
)
from tests.support.inprocess_app import Endpoint, against_app

SECRET = "webhook-secret-for-tests"
BODY = b'{"ref": "refs/heads/main"}'


def hex_signature(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={hex_signature(body)}", **extra}


# --- signatures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"X-Hub-Signature-256": f"sha256={hex_signature(BODY)}"},
    {"X-Gitea-Signature": hex_signature(BODY)},
    {"X-Forgejo-Signature": hex_signature(BODY)},
    {"X-Gitlab-Token": SECRET},
], ids=["github", "gitea", "forgejo", "gitlab"])
def test_each_forge_signature_of_the_body_is_believed(headers: dict[str, str]) -> None:
    assert verify_webhook(SECRET, BODY, headers)
    assert not verify_webhook("another-secret", BODY, headers)
    if "X-Gitlab-Token" not in headers:
        assert not verify_webhook(SECRET, BODY + b" ", headers), "the signature covers the body"


def test_a_signature_in_the_wrong_shape_or_none_at_all_is_refused() -> None:
    assert not verify_webhook(SECRET, BODY, {})
    assert not verify_webhook(SECRET, BODY, {"X-Hub-Signature-256": hex_signature(BODY)}), "GitHub's needs sha256="
    assert not verify_webhook(SECRET, BODY, {"X-Gitea-Signature": f"sha256={hex_signature(BODY)}"})
    # The first signature header present decides: a bad GitHub one is not rescued by a good Gitea one.
    assert not verify_webhook(SECRET, BODY, {"X-Hub-Signature-256": "sha256=00",
                                             "X-Gitea-Signature": hex_signature(BODY)})


def test_only_a_delivery_with_nothing_but_gitlabs_token_is_token_only() -> None:
    assert gitlab_token_only({"X-Gitlab-Token": SECRET})
    assert not gitlab_token_only({"X-Gitlab-Token": SECRET, "X-Hub-Signature-256": "sha256=00"})
    assert not gitlab_token_only({"X-Gitlab-Token": ""}) and not gitlab_token_only({})


# --- what identifies a delivery ---------------------------------------------------------------------------


def test_a_delivery_is_known_by_its_id_values_and_its_body() -> None:
    # Gitea sends one id under three names: one id key, and the body's.
    keys, has_id = delivery_keys(BODY, {"X-Gitea-Delivery": "d-1", "X-GitHub-Delivery": "d-1",
                                        "X-Gogs-Delivery": " d-1 "})
    assert has_id and keys == [digest(b"id", b"d-1"), digest(b"body", BODY)]
    keys, has_id = delivery_keys(BODY, {"Idempotency-Key": "k", "X-Gitlab-Event-UUID": "u"})
    assert has_id and len(keys) == 3 and keys[-1] == digest(b"body", BODY)


def test_a_delivery_without_an_id_is_known_by_its_body_alone() -> None:
    assert delivery_keys(BODY, {"X-GitHub-Delivery": "  "}) == ([digest(b"body", BODY)], False)
    assert delivery_keys(b"other", {}) == ([digest(b"body", b"other")], False)


# --- which repositories a payload names --------------------------------------------------------------------


def test_a_payload_names_its_repositories_by_host_and_path() -> None:
    github = {"repository": {"clone_url": "https://GitHub.com/Acme/Shop.git", "ssh_url": "git@github.com:acme/shop.git",
                             "html_url": "https://github.com/acme/shop/", "name": "shop", "url": 7}}
    assert repository_urls(github) == {"github.com/acme/shop"}
    gitlab = {"project": {"git_http_url": "https://gitlab.example.com/a/b.git", "web_url": "https://gitlab.example.com/a/b"}}
    assert repository_urls(gitlab) == {"gitlab.example.com/a/b"}
    assert repository_urls({"repository": "https://x/y.git", "ref": "main"}) == set()


# --- POST /hooks/git on the real app --------------------------------------------------------------------


def push(*urls: str, section: str = "repository") -> bytes:
    return json.dumps({"ref": "refs/heads/main", section: {key: url for key, url in zip(
        ("clone_url", "ssh_url", "html_url"), urls, strict=False)}}).encode()


def test_a_push_wakes_the_sites_on_that_repository_only(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        endpoint.sites.update({"shop.example.com": "https://git.example.com/acme/shop.git",
                               "blog.example.com": "https://git.example.com/acme/blog",
                               "shop2.example.com": "https://git.example.com/Acme/Shop/"})
        body = push("https://git.example.com/acme/shop.git", "git@git.example.com:acme/shop.git")
        response = await client.post("/hooks/git", data=body, headers=signed(body, **{"X-GitHub-Delivery": "1"}))
        assert response.status == 202 and await response.json() == {"sites": ["shop.example.com", "shop2.example.com"]}
        assert endpoint.requested == [{"shop.example.com", "shop2.example.com"}]
        body = push("https://git.example.com/acme/nothing-declared.git")
        response = await client.post("/hooks/git", data=body, headers=signed(body, **{"X-GitHub-Delivery": "2"}))
        assert response.status == 202 and await response.json() == {"sites": []}
        assert len(endpoint.requested) == 1, "no site to wake: the daemon is not asked"
        assert endpoint.fetches == 0

    against_app(tmp_path, scenario, webhook_secret=SECRET, fetch=True)


def test_a_push_named_in_the_scp_form_wakes_a_site_declared_with_ssh_and_a_port(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        endpoint.sites.update({"shop.example.com": "ssh://git@127.0.0.1:2200/srv/git/shop.git",
                               "blog.example.com": "ssh://git@127.0.0.1:2200/srv/git/blog.git"})
        body = json.dumps({"ref": "refs/heads/main", "repository": {
            "ssh_url": "git@127.0.0.1:srv/git/shop.git", "clone_url": "http://127.0.0.1:3000/srv/git/shop.git"}}).encode()
        response = await client.post("/hooks/git", data=body, headers=signed(body, **{"X-GitHub-Delivery": "1"}))
        assert response.status == 202 and await response.json() == {"sites": ["shop.example.com"]}
        assert endpoint.requested == [{"shop.example.com"}]

    against_app(tmp_path, scenario, webhook_secret=SECRET, fetch=True)


def test_a_push_to_the_declarations_repository_fetches_them(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        body = push("git@git.example.com:acme/decl.git", section="project")
        response = await client.post("/hooks/git", data=body, headers=signed(body))
        assert response.status == 202 and await response.json() == {"sites": [], "declarations": True}
        assert endpoint.fetches == 1 and endpoint.requested == []

    against_app(tmp_path, scenario, webhook_secret=SECRET, fetch=True,
                repo="https://git.example.com/acme/decl.git")


def test_without_a_way_to_fetch_a_declarations_push_is_not_claimed(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        body = push("https://git.example.com/acme/decl")
        response = await client.post("/hooks/git", data=body, headers=signed(body))
        assert response.status == 202 and await response.json() == {"sites": []}

    against_app(tmp_path, scenario, webhook_secret=SECRET, repo="https://git.example.com/acme/decl.git")


def test_without_a_secret_no_delivery_is_believed(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        endpoint.sites["shop.example.com"] = "https://git.example.com/acme/shop.git"
        body = push("https://git.example.com/acme/shop.git")
        response = await client.post("/hooks/git", data=body, headers=signed(body))
        assert response.status == 401 and endpoint.requested == []
        endpoint.update(webhook_secret=SECRET)  # a SIGHUP that sets it: the next delivery is believed
        response = await client.post("/hooks/git", data=body, headers=signed(body))
        assert response.status == 202 and endpoint.requested == [{"shop.example.com"}]

    against_app(tmp_path, scenario)


def test_a_signed_body_that_is_not_json_is_refused_and_not_remembered(tmp_path: Path) -> None:
    async def scenario(client: TestClient[Any, Any], endpoint: Endpoint) -> None:
        body = b"payload=%7B%7D"
        response = await client.post("/hooks/git", data=body, headers=signed(body, **{"X-GitHub-Delivery": "f"}))
        assert response.status == 400 and "JSON" in (await response.json())["error"]
        assert endpoint.app is not None and len(endpoint.app[DELIVERIES]) == 0
        body = b'["a", "list"]'  # JSON, but no object: accepted, names nothing
        response = await client.post("/hooks/git", data=body, headers=signed(body, **{"X-GitHub-Delivery": "f"}))
        assert response.status == 202 and await response.json() == {"sites": []}
        assert len(endpoint.app[DELIVERIES]) == 2

    against_app(tmp_path, scenario, webhook_secret=SECRET)
