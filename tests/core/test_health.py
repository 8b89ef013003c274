"""reconciler.core.health: a site's `[health]` table, validated strictly. Exactly one of `url` (an
http(s) URL without spaces or credentials) or `command`; a status code or a range; `contains` for
URL checks only; timings within their bounds and a whole run under MAX_TOTAL_SECONDS; whole
seconds as TOML writes them accepted as seconds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.core.health import MAX_COMMAND, MAX_TOTAL_SECONDS, HealthCheck

URL = "http://127.0.0.1/health"


def check(**fields: Any) -> HealthCheck:
    return HealthCheck.model_validate(fields)


def test_a_url_check_has_defaults_and_a_deadline_of_every_try() -> None:
    health = check(url=URL)
    assert (health.status, health.timeout, health.retries, health.interval, health.grace) == \
        ("200-399", 5.0, 2, 0.5, 0.0)
    assert health.status_range == (200, 399)
    assert health.deadline == 3 * (5.0 + 0.5)
    assert check(url=URL, grace=10, retries=0, timeout=2, interval=0).deadline == 12.0


@pytest.mark.parametrize(("status", "expected"), [("200", (200, 200)), ("204-204", (204, 204)),
                                                  ("100-599", (100, 599))])
def test_a_status_is_a_code_or_a_range(status: str, expected: tuple[int, int]) -> None:
    assert check(url=URL, status=status).status_range == expected


@pytest.mark.parametrize("status", ["600", "099", "399-200", "2xx", "200-", " 200", "200\n", "²00"])
def test_a_status_that_is_no_code_or_range_is_refused(status: str) -> None:
    with pytest.raises(ValidationError, match="must be an HTTP status code or a range"):
        check(url=URL, status=status)


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "127.0.0.1/health", "http://user:pw@127.0.0.1/",
                                 "http://127.0.0.1/a b", "http://127.0.0.1/\x00", "https://", "http://h/\n"])
def test_a_url_that_is_not_plain_http_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="http:// or https:// URL without spaces or credentials"):
        check(url=url)


@pytest.mark.parametrize(("fields", "says"), [
    ({}, "needs exactly one of url or command"),
    ({"url": URL, "command": "true"}, "needs exactly one of url or command"),
    ({"command": "true", "contains": "ok"}, "contains applies to url checks only"),
    ({"command": "   "}, "non-empty shell code"),
    ({"command": "a\x00b"}, "no NUL"),
    ({"command": "x" * (MAX_COMMAND + 1)}, f"at most {MAX_COMMAND} characters"),
    ({"url": URL, "contains": ""}, "non-empty line"),
    ({"url": URL, "contains": "ok\nforged"}, "non-empty line"),
    ({"url": URL, "timeout": 0}, "timeout must be in (0, 120]"),
    ({"url": URL, "interval": 61}, "interval in [0, 60]"),
    ({"url": URL, "grace": -1}, "grace in [0, 300]"),
    ({"url": URL, "retries": 21}, "retries must be between 0 and 20"),
    ({"url": URL, "colour": "blue"}, "Extra inputs are not permitted"),
    ({"url": URL, "retries": "2"}, "valid integer"),
    ({"url": URL, "timeout": True}, "valid number"),
])
def test_a_mistake_is_refused_saying_what_is_allowed(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check(**fields)
    assert says in str(caught.value)


def test_a_whole_run_must_end_inside_a_pass() -> None:
    longest = check(url=URL, grace=300, retries=4, timeout=60, interval=0)
    assert longest.deadline == MAX_TOTAL_SECONDS
    with pytest.raises(ValidationError, match="must stay under 600 s"):
        check(url=URL, grace=300, retries=4, timeout=60, interval=0.5)


def test_whole_seconds_are_seconds_and_the_check_is_frozen() -> None:
    health = check(command="php artisan health", timeout=10, interval=1, grace=2)
    assert (type(health.timeout), type(health.interval), type(health.grace)) == (float, float, float)
    with pytest.raises(ValidationError):
        health.timeout = 1.0
