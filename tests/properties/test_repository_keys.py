"""Repository URLs, from declarations and from webhook payloads (any HTTP client's text): one
repository written in any form (https, http, ssh:// with or without user and port, git+ssh://, the
scp-like `user@host:path`, with or without `.git` and a trailing '/', in any case) has one key;
two repositories that differ in host or path never share one; and any text at all is keyed
without an exception."""

from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from reconciler.core.repository_url import repository_key
from tests.properties.strategies import FAST, nasty_text

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
hosts = st.one_of(st.lists(label, min_size=1, max_size=3).map(".".join),
                  st.tuples(*[st.integers(0, 255)] * 4).map(lambda p: ".".join(map(str, p))))
segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)
paths = st.lists(segment, min_size=1, max_size=4).map("/".join)
users = st.sampled_from(["", "git@", "deploy@", "x-token-auth@"])
ports = st.sampled_from(["", ":22", ":2200", ":443"])
FORMS = ("https", "http", "ssh", "git+ssh", "scp", "scp-nouser")


def _write(form: str, host: str, path: str, user: str, port: str, suffix: str, upper: bool) -> str:
    if form == "scp":
        url = f"{user or 'git@'}{host}:{path}{suffix}"
    elif form == "scp-nouser":
        url = f"{host}:{path}{suffix}"
    elif form.startswith("http"):
        url = f"{form}://{host}{port}/{path}{suffix}"
    else:
        url = f"{form}://{user}{host}{port}/{path}{suffix}"
    return url.upper() if upper else url


written = st.tuples(st.sampled_from(FORMS), users, ports, st.sampled_from(["", ".git", "/", ".git/"]), st.booleans())


@FAST
@given(hosts, paths, written, written)
def test_every_form_of_one_repository_has_one_key(host: str, path: str, one: tuple[str, str, str, str, bool],
                                                   other: tuple[str, str, str, str, bool]) -> None:
    first = _write(one[0], host, path, *one[1:])
    second = _write(other[0], host, path, *other[1:])
    assert repository_key(first) == repository_key(second) == f"{host}/{path}", (first, second)


@FAST
@given(hosts, paths, hosts, paths, written, written)
def test_different_repositories_have_different_keys(host: str, path: str, host2: str, path2: str,
                                                    one: tuple[str, str, str, str, bool],
                                                    other: tuple[str, str, str, str, bool]) -> None:
    assume((host, path) != (host2, path2))
    assert repository_key(_write(one[0], host, path, *one[1:])) != \
        repository_key(_write(other[0], host2, path2, *other[1:]))


@FAST
@given(nasty_text)
def test_any_text_is_keyed_without_an_exception(text: str) -> None:
    assert isinstance(repository_key(text), str)
