"""A site's `repository` URL with credentials: over any transport
but SSH any user information is refused (a bare token is a valid GitHub user name), over SSH only
a password (`user:password@`, plain or percent-encoded); and the refusal never depends on (so
never quotes) the secret it refuses."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.declaration_files import parse_site
from reconciler.core.declarations import InvalidSite, SiteDeclaration
from tests.properties.strategies import FAST
from tests.support import toml_value

FILE = "sites.d/shop.example.com.toml"
SSH = ("ssh", "git+ssh", "ssh+git", "scp")
SCHEMES = (*SSH, "https", "http", "ftp", "ftps", "git", "file", "persistent-https::https")

# What RFC 3986 allows in user information, less the separators ':' and '%' (added on purpose below).
userinfo = st.text(alphabet="abcXYZ019._~!$&'()*+,;=", min_size=1, max_size=24)
colons = st.sampled_from([":", "%3A", "%3a"])


def _url(scheme: str, user: str, password: str | None, colon: str) -> str:
    credentials = user if password is None else f"{user}{colon}{password}"
    if scheme == "scp":
        # git takes a literal ':' only; a percent-encoded one is part of the login name it sends.
        return f"{user}:{password}@127.0.0.1:acme/app.git" if password is not None else f"{user}@127.0.0.1:app.git"
    return f"{scheme.swapcase() if user[0] == 'a' else scheme}://{credentials}@127.0.0.1/acme/app.git"


def _judge(repository: str) -> SiteDeclaration | InvalidSite:
    text = f'server = "web-1"\nrepository = {toml_value(repository)}\n'
    return parse_site(FILE, text.encode())


@FAST
@given(st.sampled_from(SCHEMES), userinfo, st.none() | st.text(alphabet="abcXYZ019._~!$&'()*+,;=", max_size=24),
       colons)
def test_credentials_are_refused_without_being_quoted(scheme: str, user: str, password: str | None,
                                                      colon: str) -> None:
    judged = _judge(_url(scheme, user, password, colon))
    refused = scheme not in SSH or password is not None
    assert isinstance(judged, InvalidSite) == refused, (scheme, user, password, judged)
    if isinstance(judged, InvalidSite):
        assert judged.errors[0].startswith(f"{FILE}:2: repository: must not hold credentials"), judged.errors
        # The same refusal, word for word, whatever the secret: it is not in the message.
        other = _judge(_url(scheme, "u", None if password is None else "p", colon))
        assert isinstance(other, InvalidSite) and other.errors == judged.errors

