"""service/http/digests.py: what the HTTP checks keep and compare instead of the secrets themselves.
A digest keeps its parts apart, header text with undecodable bytes (aiohttp's surrogates) is
still bytes to digest and compare, and the comparison says equal only for equal values."""

from __future__ import annotations

import hashlib

from reconciler.service.http.digests import digest, header_bytes, same


def test_a_digest_is_the_sha256_of_its_parts_nul_separated() -> None:
    assert digest(b"session", b"abc") == hashlib.sha256(b"session\0abc").digest()
    assert len(digest(b"x")) == 32


def test_parts_stay_apart_in_a_digest() -> None:
    assert digest(b"ab", b"c") != digest(b"a", b"bc")
    assert digest(b"token", b"x") != digest(b"session", b"x"), "the label is part of what is digested"


def test_header_text_with_undecodable_bytes_becomes_bytes_without_an_error() -> None:
    as_aiohttp_hands_them = [raw.decode("utf-8", "surrogateescape") for raw in (b"\xff\xfe", b"\xfe\xff", b"\xff")]
    encoded = [header_bytes(text) for text in as_aiohttp_hands_them]
    assert len(set(encoded)) == 3, "different bytes sent, different bytes compared"
    assert header_bytes("Bearer \u00fc") == "Bearer \u00fc".encode()


def test_same_is_equality_of_header_text_even_with_undecodable_bytes() -> None:
    assert same("Bearer s3cret", "Bearer s3cret")
    assert not same("Bearer s3cre", "Bearer s3cret")
    assert not same("Bearer s3cret ", "Bearer s3cret")
    odd = b"\xff\xfe".decode("utf-8", "surrogateescape")
    assert same(odd, odd) and not same(odd, "\xff\xfe")
