"""service/http/throttle.py, the limiter of failed authentications: pure units on an injected clock,
and the warning the endpoint logs at start for a weak token (the daemon end to end:
tests/hostile/test_api_guessing.py; who the client is behind a proxy: test_forwarded.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import Settings
from reconciler.engine.converge import ssh_options
from reconciler.engine.store import Store
from reconciler.remote.transport.pool import TransportPool
from reconciler.service.http.app import serve
from reconciler.service.http.context import WebContext
from reconciler.service.http.throttle import MIN_TOKEN, Throttle, client_key, weak_token
from reconciler.service.metrics import PassStats
from tests.support import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(**kwargs: Any) -> tuple[Throttle, Clock]:
    clock = Clock()
    return Throttle(**{"free": 3, "first": 1.0, "cap": 8.0, "forget": 60.0, "clock": clock, **kwargs}), clock


def test_the_first_failures_are_free_then_each_doubles_the_wait_up_to_the_cap() -> None:
    limiter, clock = throttle()
    delays = [limiter.failed("203.0.113.9").delay for _ in range(8)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 8]
    assert limiter.retry_after("203.0.113.9") == 8
    clock.now += 8
    assert limiter.retry_after("203.0.113.9") == 0


def test_attempts_while_waiting_are_refused_counted_and_reported_with_the_next_failure() -> None:
    limiter, clock = throttle(free=0)
    assert limiter.failed("203.0.113.9").delay == 1
    clock.now += 0.25
    assert [limiter.retry_after("203.0.113.9") for _ in range(3)] == [0.75] * 3
    clock.now += 1
    assert limiter.retry_after("203.0.113.9") == 0
    failure = limiter.failed("203.0.113.9")
    assert (failure.failures, failure.delay, failure.refused) == (2, 2, 3)
    assert limiter.failed("203.0.113.9").refused == 0


def test_clients_are_apart_and_a_success_forgives_nothing() -> None:
    limiter, _ = throttle(free=0)
    limiter.failed("203.0.113.9")
    assert limiter.retry_after("203.0.113.9") > 0
    assert limiter.retry_after("203.0.113.10") == 0, "another address has its own allowance"


def test_a_client_is_forgotten_an_interval_after_its_last_failure() -> None:
    limiter, clock = throttle()
    for _ in range(5):
        limiter.failed("203.0.113.9")
    clock.now += 59
    assert limiter.failed("203.0.113.9").failures == 6, "the last failure keeps it remembered"
    clock.now += 60
    assert limiter.retry_after("203.0.113.9") == 0 and len(limiter) == 0
    assert limiter.failed("203.0.113.9").failures == 1


def test_memory_is_bounded_the_oldest_failure_goes_first() -> None:
    limiter, clock = throttle(limit=3, free=0)
    for number in range(5):
        clock.now += 0.01
        limiter.failed(f"198.51.100.{number}")
    assert len(limiter) == 3
    assert limiter.retry_after("198.51.100.0") == 0 and limiter.retry_after("198.51.100.1") == 0
    assert limiter.retry_after("198.51.100.4") > 0


def test_many_failures_never_overflow_the_delay() -> None:
    limiter, clock = throttle(free=0, cap=900.0, forget=10**9)
    for _ in range(5000):
        clock.now += 1000
        failure = limiter.failed("203.0.113.9")
    assert failure.delay == 900.0 and failure.failures == 5000


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.9", "203.0.113.9"),
    ("::ffff:203.0.113.9", "203.0.113.9"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("[2001:db8:1:3::1]", "2001:db8:1:3::/64"),
    ("unknown", "unknown"),
])
def test_clients_are_ipv4_addresses_and_ipv6_slash_64s(address: str, key: str) -> None:
    assert client_key(address) == key


def test_weak_tokens_are_named_when_the_endpoint_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert weak_token(None) is None and weak_token("x" * MIN_TOKEN) is None
    assert "9 characters" in (weak_token("change-me") or "")

    async def start(token: str) -> list[str]:
        settings = Settings(repo=tmp_path, state_dir=tmp_path / "state", listen=f"127.0.0.1:{free_port()}",
                            api_token=token)
        store = Store(settings.db_path)
        ctx = WebContext(lambda: settings, store, TransportPool(ssh_options(settings)), PassStats(),
                         lambda: None, lambda domains: None, asyncio.Event())
        caplog.clear()
        runner = await serve(ctx)
        await runner.cleanup()
        store.close()
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    with caplog.at_level("INFO", logger="reconciler"):
        assert asyncio.run(start("change-me")) == [
            "http: api_token has 9 characters: use at least 16 random ones (e.g. `openssl rand -hex 32`), "
            "or it can be guessed"]
        assert asyncio.run(start("x" * 32)) == []
