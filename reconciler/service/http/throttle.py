"""Failed authentications slow their client down: online guessing of `api_token` (and of
`webhook_secret`) gets thirty tries, then exponentially longer waits.

One `Throttle` per secret, so a forge sending a stale webhook secret never locks the API out.
Per client address: a client is an IPv4 address, or an IPv6 /64 (one host's share of a
network, which its owner can change at will within it). A client's first FREE failures cost
nothing (typos, a script with an old token, a monitoring probe that checks the 401); each
failure after them makes it wait FIRST_DELAY, then twice that, up to MAX_DELAY, before its
next attempt is even checked. An attempt while it waits is answered 429 with `Retry-After` and
not checked at all: the right token then gets the same 429 as a wrong one, so waiting is the
only way to learn anything. At MAX_DELAY a guesser on one address gets four tries an hour.

A success does not forgive earlier failures. A client is an address, and an address can be
shared (every local user is 127.0.0.1; every client of a reverse proxy is its address unless
`trusted_proxies` names it): if a scraper's success on the same address wiped the count, a
guesser there would get FREE more tries per scrape. A client is forgotten FORGET seconds after
its last failure. At most MAX_CLIENTS are remembered, the one whose last failure is oldest
forgotten first: the memory stays fixed however many addresses a guesser has.

The middleware does the bookkeeping around the handlers, which need not know: a request that
tries a secret (the caller's `credential` says which) is refused while its client waits, and
counted as a failure when it is answered 401. Each failure is logged with the client's address
and how many attempts were refused since the previous one, so the log says who guesses without
a line per refused attempt.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

FREE = 30                # failures a client may make before it has to wait (typos, retries, probes)
FIRST_DELAY = 1.0        # seconds after failure FREE + 1, doubling with each further one
MAX_DELAY = 900.0        # the longest wait: four tries an hour
FORGET = 3600.0          # a client is forgotten this long after its last failure (> MAX_DELAY)
MAX_CLIENTS = 10_000     # the memory bound: about a megabyte
# Below this an api_token is worth guessing even at four tries an hour from each of many
# addresses: the daemon says so at start (a warning, not a refusal: see weak_token).
MIN_TOKEN = 16


def weak_token(token: str | None) -> str | None:
    """Why `token` is too short to stand up to guessing, or None. A warning, not a refusal: a
    refusal would stop a daemon that upgraded with a working configuration, and the throttle
    already bounds what guessing can do."""
    if token is None or len(token) >= MIN_TOKEN:
        return None
    return (f"api_token has {len(token)} characters: use at least {MIN_TOKEN} random ones "
            "(e.g. `openssl rand -hex 32`), or it can be guessed")


def client_key(address: str) -> str:
    """What the throttle counts by: an IPv4 address (also inside an IPv4-mapped IPv6 one), an
    IPv6 address's /64, or the text itself when it is not an IP address (a Unix socket)."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Client:
    failures: int = 0
    last: float = 0.0      # when it last failed
    until: float = 0.0     # no attempt of it is checked before this
    refused: int = 0       # attempts refused since its last failure


@dataclass(frozen=True)
class Failure:
    """One failure as counted: the client's failures so far, how long it now waits, and how many
    of its attempts were refused unchecked since its previous failure."""

    failures: int
    delay: float
    refused: int


class Throttle:
    """The failures of one secret's clients (see the module docstring)."""

    def __init__(self, free: int = FREE, first: float = FIRST_DELAY, cap: float = MAX_DELAY,
                 forget: float = FORGET, limit: int = MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.first, self.cap, self.forget, self.limit, self.clock = free, first, cap, forget, limit, clock
        # By last failure, oldest first: expiry and eviction both take from the front.
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def _expire(self, now: float) -> None:
        while self._clients and next(iter(self._clients.values())).last + self.forget <= now:
            self._clients.popitem(last=False)

    def retry_after(self, address: str) -> float:
        """Seconds until an attempt from `address` is checked again; 0 when it may try now. A
        positive answer counts the attempt as refused."""
        now = self.clock()
        self._expire(now)
        client = self._clients.get(client_key(address))
        if client is None or client.until <= now:
            return 0.0
        client.refused += 1
        return client.until - now

    def failed(self, address: str) -> Failure:
        """Count a failed attempt from `address`; what it costs the client."""
        now = self.clock()
        self._expire(now)
        key = client_key(address)
        client = self._clients.pop(key, None) or _Client()
        client.failures += 1
        client.last = now
        over = client.failures - self.free
        # The exponent stops growing long before MAX_DELAY could overflow a float.
        delay = min(self.first * 2.0 ** min(over - 1, 60), self.cap) if over > 0 else 0.0
        client.until = now + delay
        refused, client.refused = client.refused, 0
        self._clients[key] = client
        while len(self._clients) > self.limit:
            self._clients.popitem(last=False)
        return Failure(client.failures, delay, refused)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(throttles: Mapping[str, Throttle], credential: Callable[[web.Request], str | None],
               client: Callable[[web.Request], str]) -> Middleware:
    """An aiohttp middleware: `credential(request)` names the secret a request tries (a key of
    `throttles`), or None for a request that tries none; `client(request)` is its address."""

    @web.middleware
    async def throttled(request: web.Request, handler: Handler) -> web.StreamResponse:
        secret = credential(request)
        if secret is None:
            return await handler(request)
        throttle, address = throttles[secret], client(request)
        wait = throttle.retry_after(address)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return web.json_response(
                {"error": f"too many failed attempts at the {secret} from {address}: try again in {seconds} s"},
                status=429, headers={"Retry-After": str(seconds)})
        response = await handler(request)
        if response.status == 401:
            failure = throttle.failed(address)
            waits = f"; its next attempt is checked in {failure.delay:.0f} s" if failure.delay else ""
            refused = f" ({failure.refused} refused unchecked since its previous one)" if failure.refused else ""
            log.warning("http: failed authentication with the %s from %s: failure %d from this address%s%s",
                        secret, address, failure.failures, waits, refused)
        return response

    return throttled
