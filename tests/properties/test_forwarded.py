"""`X-Forwarded-For` is untrusted HTTP input (service/http/forwarded.py): whatever a client or proxy
writes there gives the peer or a real IP address, never an exception, and a peer that is not a
trusted proxy is the client whatever it writes (it cannot choose its throttle allowance)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from reconciler.service.http.forwarded import client_from, networks

TRUSTED = networks(["127.0.0.1", "10.0.0.0/8", "::1"])
hops = st.one_of(st.ip_addresses().map(str), st.text(max_size=40),
                 st.sampled_from(["[2001:db8::1]:443", "203.0.113.7:51234", "unknown", "", " , ,", "::ffff:10.1.2.3"]))
values = st.lists(st.lists(hops, max_size=5).map(", ".join), max_size=4)


@given(st.sampled_from(["127.0.0.1", "10.9.8.7", "::1"]), values)
def test_behind_a_trusted_proxy_the_client_is_the_peer_or_an_address(peer: str, forwarded: list[str]) -> None:
    client = client_from(peer, forwarded, TRUSTED)
    assert client == peer or ipaddress.ip_address(client)


untrusted_peers = st.ip_addresses().filter(lambda ip: not any(ip in n for n in TRUSTED)).map(str)


@given(untrusted_peers, values)
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(peer: str, forwarded: list[str]) -> None:
    assert client_from(peer, forwarded, TRUSTED) == peer
