"""The probe's `@env` record (the digest of a site's shared/.env) is read strictly: whatever a
server prints, the reader returns a sha256, None for "-", or raises ValueError, and the probe
reader turns anything else into that site's problem, never another site's fact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.facts import ProbeSite
from reconciler.core.site_env import parse_digest
from reconciler.remote.protocol.probing import Tag, frame, parse_probe
from tests.properties.strategies import FAST, nasty_text

SITES = [ProbeSite("a.example.com", "/srv", (), True), ProbeSite("b.example.com", "/srv", (), True)]


@FAST
@given(st.one_of(nasty_text, st.text(), st.text(alphabet="0123456789abcdefABCDEF -", min_size=60, max_size=70)))
def test_digest_is_a_sha256_none_or_an_error(value: str) -> None:
    try:
        found = parse_digest(value)
    except ValueError:
        return
    assert (found is None and value == "-") or (found == value and len(value) == 64
                                              and set(value) <= set("0123456789abcdef"))


@FAST
@given(st.one_of(nasty_text, st.text()))
def test_a_bad_digest_record_is_its_sites_problem_only(value: str) -> None:
    good = "b" * 64
    output = (frame(Tag.SITE, "a.example.com") + frame(Tag.ENV, value)
              + frame(Tag.SITE, "b.example.com") + frame(Tag.ENV, good) + frame(Tag.END))
    facts = parse_probe(output, SITES, [])
    assert facts.sites["b.example.com"].env_digest == good and facts.sites["b.example.com"].problem is None
    a = facts.sites["a.example.com"]
    clean = value.replace("\0", "")
    try:
        expected = parse_digest(clean)
    except ValueError:
        assert a.problem is not None and a.env_digest is None
    else:
        assert a.problem is None and a.env_digest == expected
