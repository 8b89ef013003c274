"""Declarations: `parse_site` judges any bytes as a site or an invalid site, never an exception."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite, SiteDeclaration
from tests.properties.strategies import FAST, nasty_text

TOML_BITS = [
    'server = "local"\n', 'server = "web-1"\n', 'server = "a..b"\n', 'server = "127.0.0.1:99999"\n',
    'repository = "/srv/git/app.git"\n', 'repository = "-x"\n', 'branch = "main"\n', 'branch = "a\u2028b"\n',
    'keep = 0\n', "keep = 99999999999999999999999\n", 'pin = "31022025-101010"\n', 'shared = ["../x"]\n',
    'script = """\nphp artisan migrate\n"""\n', "[health]\n", 'url = "http://127.0.0.1/"\n', "x = [" * 40,
    "a.b.c.d.e.f.g.h = 1\n", '"\\u0000" = 1\n', "\x00", "\ufeff", "\r\n", "servers = []\n", 'commit = "abc"\n',
]
toml_like = st.lists(st.one_of(st.sampled_from(TOML_BITS), nasty_text), max_size=12).map("".join)
filenames = st.one_of(st.just("sites.d/shop.example.com.toml"),
                      nasty_text.map(lambda stem: f"sites.d/{stem}.toml"))


@FAST
@given(filenames, st.one_of(st.binary(max_size=512), toml_like.map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_parse_site_judges_any_bytes(filename: str, data: bytes) -> None:
    judged = parse_site(filename, data)
    assert isinstance(judged, SiteDeclaration | InvalidSite)
    if isinstance(judged, InvalidSite):
        assert judged.errors and all(ch.isprintable() for line in judged.errors for ch in line)
