"""core/repository_url.py: every URL form a forge or an operator uses for one repository (https,
ssh:// with user and port, git's scp-like `user@host:path`, a trailing `.git` or '/', upper case,
IPv6 hosts, local paths and file:// URLs) has one key, and different repositories different keys.
The property over generated URLs is tests/properties/test_repository_keys.py."""

from __future__ import annotations

import pytest

from reconciler.core.repository_url import repository_key


@pytest.mark.parametrize("url", [
    "https://git.example.com/acme/decl.git", "https://git.example.com/acme/decl/", "HTTPS://Git.Example.com/Acme/Decl",
    "ssh://git@git.example.com:22/acme/decl.git", "git@git.example.com:acme/decl.git", "git.example.com:acme/decl",
    "http://user@git.example.com:3000/acme/decl", "ssh://git@git.example.com/~/acme/decl.git",
    "git+ssh://git@git.example.com./acme/decl", " git@git.example.com:/acme/decl.git\n",
])
def test_every_url_form_of_one_repository_has_one_key(url: str) -> None:
    assert repository_key(url) == "git.example.com/acme/decl"


def test_the_scp_form_and_the_ssh_form_with_a_port_are_one_repository() -> None:
    key = repository_key("ssh://git@127.0.0.1:2200/srv/git/shop.git")
    assert key == repository_key("git@127.0.0.1:srv/git/shop.git") == "127.0.0.1/srv/git/shop"


def test_ipv6_hosts_keep_their_address_without_brackets_or_port() -> None:
    assert repository_key("ssh://git@[::1]:2200/srv/git/shop.git") == "::1/srv/git/shop"
    assert repository_key("git@[::1]:srv/git/shop.git") == "::1/srv/git/shop"


def test_local_paths_and_file_urls_are_keyed_by_their_path() -> None:
    assert repository_key("/srv/git/shop.git") == repository_key("file:///srv/git/shop") == "/srv/git/shop"
    assert repository_key("/srv/git/shop") != repository_key("git@srv:git/shop")


def test_different_repositories_have_different_keys() -> None:
    assert repository_key("git@git.example.com:acme/decl.git") != repository_key("git@git.example.com:acme/shop.git")
    assert repository_key("https://a.example.com/acme/decl") != repository_key("https://b.example.com/acme/decl")
    assert repository_key("https://a.example.com/acme/decl") != repository_key("https://a.example.com/other/decl")
