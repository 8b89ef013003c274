"""engine.unsealing: sites with an env file get it decrypted; one that cannot be opened (no key
configured, another key, corrupt) becomes that site's Invalid, every other site unchanged."""

from __future__ import annotations

from pathlib import Path

from reconciler.core.declarations import Declarations
from reconciler.engine import sealed
from reconciler.engine.unsealing import Unsealer
from tests.support.age_keys import age_key
from tests.support.repos import site_declaration


def _decls(**sealed_files: bytes) -> Declarations:
    sites = {d: site_declaration(domain=d) for d in ("a.example.com", "b.example.com", "c.example.com")}
    return Declarations(commit="c" * 40, sites=sites, sealed=dict(sealed_files))


def test_sites_without_env_files_are_returned_as_they_are(tmp_path: Path) -> None:
    decls = _decls()
    assert Unsealer().open(decls, None) is decls


def test_each_site_gets_its_own_env_and_a_bad_file_is_its_own_invalid(tmp_path: Path) -> None:
    key, stranger = age_key(tmp_path / "k"), age_key(tmp_path / "s")
    decls = _decls(**{"a.example.com": sealed.encrypt("A=1\n", [key.public]),
                      "b.example.com": sealed.encrypt("B=2\n", [stranger.public])})
    opened = Unsealer().open(decls, key.identity_file)
    env = opened.sites["a.example.com"].env
    assert env is not None and env.text == "A=1\n"
    assert "b.example.com" not in opened.sites
    assert opened.invalid["b.example.com"].file == "sites.d/b.example.com.env.age"
    assert "cannot be decrypted" in opened.invalid["b.example.com"].message
    assert opened.sites["c.example.com"] == decls.sites["c.example.com"] and opened.sites["c.example.com"].env is None
    assert decls.sites["a.example.com"].env is None, "the parsed declarations are not changed"


def test_no_identity_configured_makes_only_env_sites_invalid(tmp_path: Path) -> None:
    key = age_key(tmp_path / "k")
    opened = Unsealer().open(_decls(**{"a.example.com": sealed.encrypt("A=1\n", [key.public])}), None)
    assert "age_identity_file is not set" in opened.invalid["a.example.com"].message
    assert set(opened.sites) == {"b.example.com", "c.example.com"}


def test_a_ciphertext_is_decrypted_once_while_its_commit_is_applied(tmp_path: Path) -> None:
    key = age_key(tmp_path / "k")
    decls = _decls(**{"a.example.com": sealed.encrypt("A=1\n", [key.public])})
    unsealer = Unsealer()
    first = unsealer.open(decls, key.identity_file)
    key.identity_file.unlink()  # a second decryption would now fail
    again = unsealer.open(decls, key.identity_file)
    assert again.sites["a.example.com"].env == first.sites["a.example.com"].env


def test_the_same_parsed_sites_get_the_same_opened_dicts_back(tmp_path: Path) -> None:
    """The daemon's wake-ups ask with the same parsed sites: the answer's dicts are the same
    objects, so the shard split made from them is not made again."""
    key = age_key(tmp_path / "k")
    decls = _decls(**{"a.example.com": sealed.encrypt("A=1\n", [key.public])})
    unsealer = Unsealer()
    first = unsealer.open(decls, key.identity_file)
    again = unsealer.open(decls, key.identity_file)
    assert again.sites is first.sites and again.invalid is first.invalid
    other = unsealer.open(_decls(**decls.sealed), key.identity_file)
    assert other.sites is not first.sites and other.sites == first.sites
