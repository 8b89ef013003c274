"""The rules one value of a site follows, each alone: a domain, a server, a branch or tag name,
and the path entries of `shared` and `copy_from_previous`. Each answers why a value is refused
(None when it is fine); the model (tests/core/test_declarations.py) applies them in context."""

from __future__ import annotations

import pytest

from reconciler.core.site_values import LOCAL_SERVER, check_branch, check_domain, check_entries, check_server


@pytest.mark.parametrize(("domain", "why"), [
    ("shop.example.com", None),
    ("a-b.example.com", None),
    ("example", "at least one dot"),
    ("Shop.example.com", "label 'Shop'"),
    ("-shop.example.com", "label '-shop'"),
    ("shop..example.com", "label ''"),
    ("x" * 64 + ".example.com", "label"),
    (("a" * 60 + ".") * 5 + "com", "longer than 253"),
])
def test_a_domain_is_a_lower_case_dns_name(domain: str, why: str | None) -> None:
    found = check_domain(domain)
    assert found is None if why is None else (found is not None and why in found), found


@pytest.mark.parametrize(("server", "why"), [
    (LOCAL_SERVER, None),
    ("web-1", None),
    ("deploy@web-1.example.com:2222", None),
    ("deploy@[::1]:22", None),
    ("-oProxyCommand=x", "option-like"),
    ("web-1:0", "port 0"),
    ("web-1:65536", "port 65536"),
    ("web-1:022", "port 022"),
    ("[1:::2]", "not an IPv6 address"),
    ("web..1", "empty label"),
    ("u" * 65 + "@web-1", "user is longer"),
    ("h" * 64 + ".example.com", "longer than 63"),
])
def test_a_server_is_local_or_an_ssh_destination_the_transport_can_use(server: str, why: str | None) -> None:
    found = check_server(server)
    assert found is None if why is None else (found is not None and why in found), found


@pytest.mark.parametrize(("name", "why"), [
    ("main", None),
    ("release/1.4", None),
    ("", "is empty"),
    ("HEAD", "'HEAD'"),
    ("-f", "must not start with '-'"),
    ("a b", "character git forbids"),
    ("a..b", "sequence git forbids"),
    ("a/", "must not start with '/'"),
    ("a/.hidden", "starts with '.'"),
    ("x.lock", "ends with '.lock'"),
])
def test_a_branch_follows_git_s_rules_and_is_never_an_option(name: str, why: str | None) -> None:
    found = check_branch(name)
    assert found is None if why is None else (found is not None and why in found), found

def test_a_tag_is_held_to_the_same_rules_in_its_own_words() -> None:
    assert check_branch("v1.4.2", "tag") is None
    assert "tag names" in (check_branch("v 1", "tag") or "")


@pytest.mark.parametrize(("entries", "why"), [
    (["storage", ".env", "vendor"], None),
    (["storage/app/public"], None),
    ([""], "non-empty relative path"),
    (["/etc"], "non-empty relative path"),
    (["a/../b"], "must not contain '..'"),
    (["-rf"], "must not contain"),
    (["vendor", "vendor"], "listed twice"),
    (["storage", "storage/app"], "overlap"),
    ([f"e{n}" for n in range(257)], "more than 256"),
])
def test_path_entries_are_relative_distinct_and_never_nested(entries: list[str], why: str | None) -> None:
    if why is None:
        assert check_entries(entries) == entries
    else:
        with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(".", r"\.")):
            check_entries(entries)
