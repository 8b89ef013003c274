"""Who sent an HTTP request, and whether it reached us over TLS, when a reverse proxy may stand
in between (`trusted_proxies` in reconciler.toml).

The TCP peer is the client unless it is one of `trusted_proxies` (addresses or networks). Then
the client is the nearest address in `X-Forwarded-For` that is not a trusted proxy, read from
the right: each proxy appends the address it saw, so the entries on the left are whatever the
client wrote and prove nothing. A request arrived over TLS when our own socket is TLS, or when a
trusted proxy says so in `X-Forwarded-Proto` (its first value: the scheme the client used). From
any other peer both headers are ignored: a client cannot choose its address (and with it its
allowance of failed authentications, service/http/throttle.py) or its scheme.

nginx sends neither by default: `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;`
and `proxy_set_header X-Forwarded-Proto $scheme;`. Caddy, Traefik and HAProxy (`option
forwardfor`) send them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> list[Network]:
    """`trusted_proxies` entries ("127.0.0.1", "10.0.0.0/8", "::1") as networks; ValueError names
    one that is neither an address nor a network."""
    found: list[Network] = []
    for entry in entries:
        try:
            found.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 127.0.0.1, 10.0.0.0/8)") from exc
    return found


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: Sequence[Network]) -> bool:
    return ip is not None and any(ip in network for network in trusted)


def client_address(request: web.Request, trusted_proxies: Sequence[str]) -> str:
    """The address of the client that sent `request` (see the module docstring)."""
    return client_from(request.remote or "unknown", request.headers.getall("X-Forwarded-For", []),
                       networks(trusted_proxies))


def client_from(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The client: `peer`, or when it is a trusted proxy the nearest untrusted address in its
    `X-Forwarded-For` values (untrusted text: anything in it gives `peer` or an address)."""
    if not _trusted(_ip(peer), trusted):
        return peer
    hops = [hop for value in forwarded_for for hop in value.split(",")]
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break  # not an address: whatever is further left is no better
        if not _trusted(ip, trusted):
            return str(ip)
    return peer


def over_tls(request: web.Request, trusted_proxies: Sequence[str]) -> bool:
    """Whether the client reached us over TLS: our socket, or a trusted proxy that says so."""
    if request.secure:
        return True
    if not _trusted(_ip(request.remote or ""), networks(trusted_proxies)):
        return False
    first = request.headers.get("X-Forwarded-Proto", "").split(",")[0]
    return first.strip().lower() == "https"
