"""core/shard.py, pure: which shard owns a server, which sites an instance skips, and the `shard`
setting's syntax. Tables of named cases, a hypothesis property (every server in exactly one of n
shards), and fixed known values checked in a fresh interpreter with another hash seed (the
assignment must not depend on Python's salted `hash()`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import Settings
from reconciler.core.declarations import Declarations, InvalidSite, SiteDeclaration
from reconciler.core.shard import Shard, shard_of, split
from tests.properties.strategies import FAST
from tests.support import ROOT, site_declaration

# sha256(server)[:8] as a big-endian integer, mod n, plus 1: fixed for good. An instance upgraded
# to a version that computed these differently would silently take over another's servers.
KNOWN = [
    ("web-1", 2, 2), ("web-2", 2, 2), ("web-3", 2, 2), ("web-4", 2, 1),
    ("web-1", 3, 2), ("web-3", 3, 3), ("web-4", 3, 1),
    ("deploy@web-2:2222", 4, 4), ("db.example.com", 5, 1), ("local", 3, 2), ("", 5, 3),
]


@pytest.mark.parametrize(("server", "count", "expected"), KNOWN)
def test_known_servers_land_in_their_fixed_shard(server: str, count: int, expected: int) -> None:
    assert shard_of(server, count) == expected


def test_the_assignment_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = ("import json, sys\nfrom reconciler.core.shard import shard_of\n"
            "print(json.dumps([shard_of(s, n) for s, n, _ in json.loads(sys.argv[1])]))")
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", code, json.dumps(KNOWN)], capture_output=True, text=True,
                              check=True, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(done.stdout) == [expected for _, _, expected in KNOWN]


@FAST
@given(server=st.text(max_size=80), count=st.integers(min_value=1, max_value=64))
def test_every_server_is_owned_by_exactly_one_of_n_shards(server: str, count: int) -> None:
    owners = [i for i in range(1, count + 1) if Shard(i, count).owns((server,))]
    assert owners == [shard_of(server, count)]
    assert all(Shard(i, count).skip_reason((server,)) is None for i in owners)
    assert all(Shard(i, count).skip_reason((server,)) is not None for i in range(1, count + 1) if i not in owners)


def test_servers_spread_over_every_shard() -> None:
    """Not a distribution test, only that no shard is always empty (a constant bug would pass the
    property above: every server in shard 1)."""
    for count in (2, 3, 5):
        assert {shard_of(f"web-{n}.example.com", count) for n in range(200)} == set(range(1, count + 1))


@pytest.mark.parametrize(("text", "expected"), [
    ("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), ("3/3", Shard(3, 3)), ("10/12", Shard(10, 12)),
])
def test_a_shard_setting_is_parsed(text: str, expected: Shard) -> None:
    assert Shard.parse(text) == expected
    assert str(expected) == text
    assert Settings(shard=text).shard == text


@pytest.mark.parametrize(("text", "says"), [
    ("0/3", "numbered 1 to 3"),
    ("4/3", "numbered 1 to 3"),
    ("1/0", "at least one shard"),
    ("0/0", "at least one shard"),
    ("a/b", 'is not "i/n"'),
    ("2", 'is not "i/n"'),
    ("", 'is not "i/n"'),
    (" 2/3", 'is not "i/n"'),
    ("2/3 ", 'is not "i/n"'),
    ("-1/3", 'is not "i/n"'),
    ("2/-3", 'is not "i/n"'),
    ("1.0/2", 'is not "i/n"'),
    ("1/2/3", 'is not "i/n"'),
    ("02/3", "leading zeros"),
    ("\uff12/\uff13", 'is not "i/n"'),  # full-width digits are digits to int(), not to us
])
def test_a_bad_shard_setting_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Shard.parse(text)
    with pytest.raises(ValueError, match=says):
        Settings(shard=text)


def test_a_site_on_many_servers_goes_with_its_first_server() -> None:
    # web-4 is in shard 1 of 2, web-1 in shard 2: the list's order decides, the rest do not count.
    assert Shard(1, 2).owns(("web-4", "web-1"))
    assert not Shard(2, 2).owns(("web-4", "web-1"))
    assert Shard(2, 2).owns(("web-1", "web-4"))
    assert Shard(1, 2).skip_reason(("web-1", "web-4")) == (
        "not this shard: its first server web-1 is in shard 2/2 (this instance is 1/2)")
    assert Shard(1, 3).skip_reason(("web-1",)) == "not this shard: server web-1 is in shard 2/3 (this instance is 1/3)"


def test_one_shard_owns_everything_without_hashing() -> None:
    whole = Shard()
    assert whole.whole and str(whole) == "1/1"
    assert whole.owns(("web-1",)) and whole.owns(("",)) and whole.skip_reason(("anything",)) is None


def test_split_keeps_this_shards_sites_and_says_why_for_the_rest() -> None:
    sites = {d: site_declaration(domain=d, server=s) for d, s in [
        ("a.example.com", "web-1"), ("b.example.com", "web-4"), ("c.example.com", "web-3")]}
    sites["many.example.com"] = SiteDeclaration(domain="many.example.com", servers=["web-4", "web-1"],
                                                repository="git@github.com:acme/shop.git")
    invalid = {"bad.example.com": InvalidSite("bad.example.com", "sites.d/bad.example.com.toml", ("x",), "web-2"),
               "worse.example.com": InvalidSite("worse.example.com", "sites.d/worse.example.com.toml", ("y",), "web-4")}
    decls = Declarations("c0ffee", dict(sites), dict(invalid))

    one, skipped_by_one = split(decls, Shard(1, 2))
    two, skipped_by_two = split(decls, Shard(2, 2))
    assert set(one.sites) == {"b.example.com", "many.example.com"} and set(one.invalid) == {"worse.example.com"}
    assert set(two.sites) == {"a.example.com", "c.example.com"} and set(two.invalid) == {"bad.example.com"}
    # Together: every site exactly once, and each instance's skipped ones are the other's.
    assert set(skipped_by_one) == set(two.sites) | set(two.invalid)
    assert set(skipped_by_two) == set(one.sites) | set(one.invalid)
    assert skipped_by_one["a.example.com"] == "not this shard: server web-1 is in shard 2/2 (this instance is 1/2)"
    assert one.commit == decls.commit and decls.sites == sites and decls.invalid == invalid  # input untouched

    same, none = split(decls, Shard())
    assert same is decls and none == {}
