"""Digests and constant-time comparison of what HTTP clients send (tokens, cookies, signatures,
delivery ids): one place for the two rules every check follows. Header text may hold any bytes
(aiohttp hands undecodable ones over as surrogates), and a secret is never compared in a time
that depends on where the first difference is."""

from __future__ import annotations

import hashlib
import hmac


def digest(*parts: bytes) -> bytes:
    """SHA-256 of `parts`, NUL-separated: what is kept in memory instead of the value itself."""
    return hashlib.sha256(b"\0".join(parts)).digest()


def header_bytes(text: str) -> bytes:
    """Header text as bytes: aiohttp hands undecodable bytes over as surrogates."""
    return text.encode("utf-8", "surrogatepass")


def same(given: str, expected: str) -> bool:
    """Constant-time comparison of a header (any text, even undecodable bytes) with a secret."""
    return hmac.compare_digest(header_bytes(given), header_bytes(expected))
