"""service/http/forwarded.py: who sent a request and whether it came over TLS, when a reverse proxy
may stand in between. Only a peer named in `trusted_proxies` is believed about X-Forwarded-For
and X-Forwarded-Proto, and then only for the nearest untrusted hop; requests are made in memory
(the daemon behind a proxy end to end: tests/hostile/test_api_guessing.py)."""

from __future__ import annotations

import ipaddress
import ssl
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from reconciler.config import Settings, validate_settings
from reconciler.errors import ConfigError
from reconciler.service.http import forwarded


def request(peer: str, headers: dict[str, str] | None = None, secure: bool = False) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: {"peername": (peer, 51234)}.get(name, default)
    return make_mocked_request("POST", "/api/session", headers=headers or {}, transport=transport,
                               sslcontext=ssl.create_default_context() if secure else None)


def test_the_peer_is_the_client_unless_it_is_a_trusted_proxy() -> None:
    spoofed = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
    assert forwarded.client_address(request("203.0.113.9", spoofed), []) == "203.0.113.9"
    assert forwarded.client_address(request("203.0.113.9", spoofed), ["127.0.0.1"]) == "203.0.113.9"
    assert not forwarded.over_tls(request("203.0.113.9", spoofed), ["127.0.0.1"])
    assert forwarded.client_address(request("127.0.0.1", spoofed), ["127.0.0.1"]) == "198.51.100.7"
    assert forwarded.over_tls(request("127.0.0.1", spoofed), ["127.0.0.0/8"])
    assert forwarded.over_tls(request("203.0.113.9", secure=True), [])


def test_the_client_is_the_nearest_untrusted_forwarded_address() -> None:
    trusted = ["127.0.0.1", "10.0.0.0/8"]
    # The client wrote the first entry itself; our proxies appended the others.
    headers = {"X-Forwarded-For": "192.0.2.66, 198.51.100.7, 10.1.2.3"}
    assert forwarded.client_address(request("127.0.0.1", headers), trusted) == "198.51.100.7"
    assert forwarded.client_address(request("127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}), trusted) == "127.0.0.1"
    assert forwarded.client_address(request("127.0.0.1", {"X-Forwarded-For": "junk, 10.1.2.3"}), trusted) \
        == "127.0.0.1"
    assert forwarded.client_address(request("::1", {"X-Forwarded-For": "[2001:db8::5]:443"}), ["::1"]) \
        == "2001:db8::5"
    assert forwarded.client_address(request("127.0.0.1", {"X-Forwarded-For": "203.0.113.9:5555"}), trusted) \
        == "203.0.113.9"
    assert not forwarded.over_tls(request("127.0.0.1", {"X-Forwarded-Proto": "http, https"}), trusted)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert Settings(trusted_proxies=["127.0.0.1", "10.0.0.0/8", "::1"]).trusted_proxies
    with pytest.raises(ConfigError, match=r"trusted_proxies: .*'proxy\.example\.com' is not an IP address"):
        validate_settings({"trusted_proxies": ["proxy.example.com"]}, None)
    assert Settings(cookie_secure=True).cookie_secure and not Settings().cookie_secure


def test_networks_reads_addresses_and_networks_and_names_a_bad_entry() -> None:
    found = forwarded.networks([" 127.0.0.1 ", "10.1.2.3/8", "::1"])
    assert found == [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                     ipaddress.ip_network("::1/128")]
    with pytest.raises(ValueError, match=r"'proxy\.example\.com' is not an IP address or network"):
        forwarded.networks(["127.0.0.1", "proxy.example.com"])


def test_forwarded_for_values_from_several_headers_are_one_chain_read_from_the_right() -> None:
    trusted = forwarded.networks(["127.0.0.1", "10.0.0.0/8"])
    # Two X-Forwarded-For headers: the later one was appended by the nearer proxy.
    assert forwarded.client_from("127.0.0.1", ["192.0.2.66", "198.51.100.7, 10.0.0.1"], trusted) == "198.51.100.7"
    assert forwarded.client_from("127.0.0.1", ["198.51.100.7", "10.0.0.2, 10.0.0.1"], trusted) == "198.51.100.7"
    assert forwarded.client_from("127.0.0.1", [], trusted) == "127.0.0.1", "no header: the proxy itself"


def test_an_ipv4_mapped_ipv6_peer_is_the_ipv4_address_it_maps() -> None:
    trusted = forwarded.networks(["127.0.0.1"])
    assert forwarded.client_from("::ffff:127.0.0.1", ["198.51.100.7"], trusted) == "198.51.100.7"
    assert forwarded.client_from("127.0.0.1", ["::ffff:198.51.100.7"], trusted) == "198.51.100.7"


def test_a_peer_that_is_no_address_is_never_trusted() -> None:
    assert forwarded.client_from("unknown", ["198.51.100.7"], forwarded.networks(["0.0.0.0/0", "::/0"])) \
        == "unknown"


def test_forwarded_proto_from_a_trusted_proxy_is_read_case_blind_and_only_https_counts() -> None:
    assert forwarded.over_tls(request("127.0.0.1", {"X-Forwarded-Proto": " HTTPS "}), ["127.0.0.1"])
    assert not forwarded.over_tls(request("127.0.0.1", {"X-Forwarded-Proto": "http"}), ["127.0.0.1"])
    assert not forwarded.over_tls(request("127.0.0.1"), ["127.0.0.1"])
