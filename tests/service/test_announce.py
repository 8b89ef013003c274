"""What a `[[notify]]` event says (reconciler.service.announce) and which URLs `[[notify]]` takes
(reconciler.config.NotifyTarget). Pure: rows in, fields and the one-line `text` out; no server,
no daemon, no network. The delivery side is tests/service/test_webhooks.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from reconciler.config import NotifyEvent, NotifyTarget, load_settings
from reconciler.core.plan import Activate, Deploy
from reconciler.engine.outcome import Applied
from reconciler.errors import ConfigError
from reconciler.service import announce
from reconciler.service.announce import FIELDS, Scene, endpoint, failed_build, fields, payload

SHOP = "shop.example.com"
AT = "2025-08-01T09:12:45Z"
OLD, NEW, BAD = "31072025-143022", "01082025-091245", "02082025-101010"
OLD_SHA, NEW_SHA, BAD_SHA = "a" * 40, "b" * 40, "c" * 40
BASE = "http://127.0.0.1:9180"


def row(deployment_id: int, release: str, commit: str, status: str = "success", **extra: Any) -> dict[str, Any]:
    return {"id": deployment_id, "release": release, "commit_sha": commit, "status": status, "build_key": "k1",
            "commit_subject": f"subject of {release}", "commit_author": "Jane Doe <jane@example.com>",
            "duration_ms": 12345, "exit_status": None, "trigger": "app commit", "requested_by": None,
            "message": "", "transient": 0, "forgiven": 0, **extra}


def scene(live: dict[str, Any] | None, previous: tuple[str | None, str | None] | None = None, *,
          sync: str = "Synced", health: str = "Healthy", message: str = "", base: str | None = BASE) -> Scene:
    return Scene(SHOP, "web-1", sync, health, message, live["release"] if live else None,
                 live["commit_sha"] if live else None, live=live, previous=previous, endpoint=base)


def event(name: str, the_scene: Scene, failed: dict[str, Any] | None = None,
          desired: str | None = None) -> dict[str, Any]:
    return payload(name, SHOP, AT, **fields(name, the_scene, failed, desired))


# --- fields -------------------------------------------------------------------------------------


def test_deployed_names_the_new_release_the_one_before_and_the_build() -> None:
    body = event("deployed", scene(row(8, NEW, NEW_SHA), (OLD, OLD_SHA)))
    assert list(body) == list(FIELDS)
    assert (body["release"], body["commit"], body["live_release"], body["live_commit"]) == (NEW, NEW_SHA, NEW, NEW_SHA)
    assert (body["previous_release"], body["previous_commit"]) == (OLD, OLD_SHA)
    assert (body["deployment_id"], body["duration_ms"], body["trigger"]) == (8, 12345, "app commit")
    assert body["log_url"] == f"{BASE}/api/sites/{SHOP}/deployments/8/log"
    assert body["dashboard_url"] == f"{BASE}/"
    assert body["text"] == (f'{SHOP} deployed on web-1: {OLD} ({OLD_SHA[:12]}) → {NEW} ({NEW_SHA[:12]}) '
                            f'"subject of {NEW}" by Jane Doe, in 12.3 s (app commit). Dashboard: {BASE}/')


def test_a_first_deploy_has_no_previous_release() -> None:
    body = event("deployed", scene(row(1, NEW, NEW_SHA), None, base=None))
    assert body["previous_release"] is None and body["previous_commit"] is None
    assert body["log_url"] is None and body["dashboard_url"] is None
    assert body["text"] == (f'{SHOP} deployed on web-1: {NEW} ({NEW_SHA[:12]}) "subject of {NEW}" by Jane Doe, '
                            "in 12.3 s (app commit)")


def test_failed_names_the_failed_build_and_keeps_the_live_release_apart() -> None:
    live = row(7, OLD, OLD_SHA)
    broken = row(9, BAD, BAD_SHA, status="failed", exit_status=3, duration_ms=2100, trigger="redeploy",
                 requested_by="alice", message="deploy script failed (exit 3) at: php artisan migrate")
    body = event("failed", scene(live, (OLD, OLD_SHA), sync="Failed", message="deploy script failed (exit 3)"),
                 broken, BAD_SHA)
    assert (body["release"], body["commit"], body["deployment_id"]) == (BAD, BAD_SHA, 9)
    assert (body["live_release"], body["live_commit"]) == (OLD, OLD_SHA)
    assert body["previous_release"] is None, "nothing switched: the live one is in live_*"
    assert (body["exit_status"], body["duration_ms"], body["trigger"], body["requested_by"]) == (3, 2100, "redeploy",
                                                                                                "alice")
    assert body["commit_subject"] == f"subject of {BAD}"
    assert body["log_url"] == f"{BASE}/api/sites/{SHOP}/deployments/9/log"
    assert body["text"] == (f'{SHOP} FAILED on web-1: {BAD} ({BAD_SHA[:12]}) "subject of {BAD}" by Jane Doe, '
                            "after 2.1 s (redeploy by alice): deploy script failed (exit 3) at: php artisan migrate. "
                            f"Live: {OLD} ({OLD_SHA[:12]}). Dashboard: {BASE}/")


def test_failed_without_a_build_names_the_desired_commit() -> None:
    body = event("failed", scene(row(7, OLD, OLD_SHA), sync="Failed", health="Degraded",
                                 message="/srv/shop.example.com is a real directory, not a symlink"), None, NEW_SHA)
    assert (body["release"], body["commit"], body["deployment_id"], body["log_url"]) == (None, NEW_SHA, None, None)
    assert body["text"] == (f"{SHOP} FAILED on web-1: {NEW_SHA[:12]}: /srv/shop.example.com is a real directory, "
                            f"not a symlink. Live: {OLD} ({OLD_SHA[:12]}). Dashboard: {BASE}/")


def test_a_first_deploy_that_fails_leaves_nothing_live() -> None:
    body = event("failed", scene(None, sync="Failed", base=None), row(1, BAD, BAD_SHA, status="failed"), BAD_SHA)
    assert body["live_release"] is None and body["release"] == BAD
    assert body["text"].endswith("(app commit): failed. Live: nothing"), body["text"]


def test_rolled_back_names_the_release_rolled_back_to() -> None:
    body = event("rolled_back", scene(row(7, OLD, OLD_SHA), (NEW, NEW_SHA)))
    assert (body["release"], body["previous_release"], body["live_release"]) == (OLD, NEW, OLD)
    assert body["duration_ms"] is None and body["trigger"] is None, "not a build: no build facts"
    assert body["text"] == (f'{SHOP} rolled back on web-1: {NEW} ({NEW_SHA[:12]}) → {OLD} ({OLD_SHA[:12]}) '
                            f'"subject of {OLD}" by Jane Doe. Dashboard: {BASE}/')


def test_degraded_says_why_and_what_is_live() -> None:
    why = "pinned release 01012020-000000 does not exist on web-1; nothing deployed in its place"
    body = event("degraded", scene(row(7, OLD, OLD_SHA), health="Degraded", sync="OutOfSync", message=why))
    assert body["release"] == OLD and body["health"] == "Degraded"
    assert body["text"] == f"{SHOP} DEGRADED on web-1: {why}. Live: {OLD} ({OLD_SHA[:12]}). Dashboard: {BASE}/"


def test_the_summary_is_one_bounded_line() -> None:
    hostile = row(9, BAD, BAD_SHA, status="failed", commit_subject="fix\nthe\r\x1b[31mbuild\t" + "x" * 500,
                  message="boom\n" * 400)
    body = event("failed", scene(None, sync="Failed"), hostile, BAD_SHA)
    text = body["text"]
    assert "\n" not in text and "\r" not in text and "\x1b" not in text and "\t" not in text
    assert '"fix the [31mbuild ' in text
    assert len(text) <= announce.TEXT_MAX and "…" in text


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(TypeError, match="relase"):
        payload("deployed", SHOP, AT, relase=NEW)


# --- which deployment a `failed` is about, and where links point ---------------------------------


def test_failed_build_prefers_what_failed_in_this_round() -> None:
    remembered = row(5, BAD, BAD_SHA, status="failed")
    this_round = row(6, NEW, NEW_SHA, status="failed")
    rows = [this_round, remembered]
    assert failed_build(rows, [Applied(Deploy(NEW, NEW_SHA, "app commit"), failed=True)], BAD_SHA, "k1") == this_round
    # A later pass: nothing applied, the remembered failure of (commit, build key) keeps it Failed.
    assert failed_build(rows, [], BAD_SHA, "k1") == remembered
    assert failed_build(rows, [], BAD_SHA, "k2") is None, "another declaration: not that failure"
    # An activation that failed is about the release it tried to activate.
    assert failed_build([row(3, OLD, OLD_SHA), *rows], [Applied(Activate(OLD, "rollback"), failed=True)], None,
                        "k1")["id"] == 3


def test_failed_build_skips_transient_and_forgiven_failures() -> None:
    rows = [row(6, BAD, BAD_SHA, status="failed", transient=1), row(5, BAD, BAD_SHA, status="failed", forgiven=1)]
    assert failed_build(rows, [], BAD_SHA, "k1") is None


@pytest.mark.parametrize(("listen", "hosts", "expected"), [
    (None, [], None),
    ("127.0.0.1:9180", [], "http://127.0.0.1:9180"),
    ("0.0.0.0:9180", [], None),
    ("[::]:9180", [], None),
    ("::1:9180", [], "http://[::1]:9180"),
    ("127.0.0.1:9180", ["deploys.internal"], "http://deploys.internal"),
    ("0.0.0.0:9180", ["deploys.internal:9180"], "http://deploys.internal:9180"),
])
def test_links_use_the_name_people_reach_the_endpoint_by(listen: str | None, hosts: list[str],
                                                         expected: str | None) -> None:
    assert endpoint(listen, hosts) == expected


# --- `[[notify]]` URLs -------------------------------------------------------------------------


def config(tmp_path: Path, *urls: str) -> Path:
    path = tmp_path / "reconciler.toml"
    path.write_text("".join(f'[[notify]]\nurl = "{url}"\n' for url in urls))
    return path


def test_webhook_and_apprise_urls_load(tmp_path: Path) -> None:
    urls = ("https://127.0.0.1:8443/hooks/SECRET", "json://127.0.0.1:8080/path", "mmost://127.0.0.1:8065/SECRET",
            "slack://T000/B000/SECRET", "mailto://user:SECRET@mail.example.com")
    settings = load_settings(config(tmp_path, *urls))
    assert [t.chat for t in settings.notify] == [False, True, True, True, True]
    assert [t.shown for t in settings.notify] == ["https://127.0.0.1:8443", "json://", "mmost://", "slack://",
                                                  "mailto://"]


@pytest.mark.parametrize(("url", "says"), [
    ("xyz://127.0.0.1/SECRET", "apprise knows no service xyz://"),
    ("slack://SECRET", "apprise does not accept this slack:// URL"),
    ("mmost://SECRET", "apprise does not accept this mmost:// URL"),
    ("127.0.0.1/SECRET", "must be an http(s):// webhook URL or an apprise URL"),
    ("http:///SECRET", "a http:// URL needs a host"),
])
def test_a_url_apprise_cannot_use_is_a_config_error_naming_the_entry(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config(tmp_path, "http://127.0.0.1/fine", url))
    message = str(caught.value)
    assert "notify.1.url" in message and says in message, message
    assert "SECRET" not in message, "a URL's token never reaches an error message"


def test_shown_keeps_only_scheme_host_and_port() -> None:
    assert NotifyTarget(url="https://user:SECRET@hooks.internal:8443/a/SECRET?t=SECRET").shown == \
        "https://hooks.internal:8443"
    assert NotifyTarget(url="http://[::1]:9/x").shown == "http://[::1]:9"
    assert NotifyTarget(url="tgram://123456789:SECRET/42").shown == "tgram://"


def test_outage_and_recovery_lines_name_their_cause() -> None:
    """`unreachable` and `recovered` of a server or of the declarations repository name no site;
    a site's `recovered` says what it recovered from and what is live."""
    at = "2025-08-01T09:12:45Z"
    down = payload(NotifyEvent.UNREACHABLE, None, at, **announce.cause_fields("web-1", "web-1: cannot connect"))
    assert down["domain"] is None and down["server"] == "web-1" and list(down) == list(FIELDS)
    assert down["text"] == "server web-1 UNREACHABLE: web-1: cannot connect"
    up = payload(NotifyEvent.RECOVERED, None, at, **announce.cause_fields("web-1", "reachable again",
                                                                          "http://127.0.0.1:9180"))
    assert up["text"] == "server web-1 reachable again. Dashboard: http://127.0.0.1:9180/"
    repo = payload(NotifyEvent.UNREACHABLE, None, at, **announce.cause_fields(None, "git fetch: refused @here"))
    assert repo["text"] == "declarations repository UNREACHABLE: git fetch: refused @\u200bhere"
    scene = Scene("shop.example.com", "web-1", "Synced", "Healthy", "", "01082025-091245", "b" * 40)
    well = payload(NotifyEvent.RECOVERED, "shop.example.com", at, **fields(NotifyEvent.RECOVERED, scene),
                   reason="failed")
    assert well["text"] == ("shop.example.com recovered on web-1: Synced/Healthy (was FAILED). "
                            f"Live: 01082025-091245 ({'b' * 12})")
    assert (well["release"], well["live_release"]) == ("01082025-091245", "01082025-091245")
