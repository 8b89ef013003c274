"""remote.protocol.importing.parse_import, the one reader of what a server's import command
printed: any output is a typed survey or a TransportError, never another exception, and a site it
calls importable has every value an import needs, checked.

And end to end: the real import command (run by /bin/sh through the local transport) with any
bytes the server controls (a directory name under deployments/, an origin URL, a shared link's
name) leaves every OTHER site's answer exactly what it is without them."""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.layout import is_release
from reconciler.core.site_values import check_domain
from reconciler.errors import TransportError
from reconciler.remote.protocol.importing import RECORD_END, Survey, Tag, frame, import_command, parse_import
from reconciler.remote.transport.local import LocalTransport
from tests.properties.strategies import FAST, nasty_text
from tests.support.brokeforge import LIVE, brokeforge_site
from tests.support.repos import make_app_repo

TAGS = [tag.value for tag in Tag]
records = st.lists(st.one_of(nasty_text, st.sampled_from(TAGS).map(frame),
                             st.tuples(st.sampled_from(TAGS), nasty_text).map(lambda t: frame(*t))),
                   max_size=20).map("".join)


def _checked(survey: Survey) -> None:
    for site in survey.sites:
        if site.problem is None:
            assert check_domain(site.name) is None and site.release is not None and is_release(site.release)
            assert site.commit is not None and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", site.commit)
            assert site.origin is not None and not re.search(r"[\x00-\x1f\x7f]", site.origin)
        else:
            assert isinstance(site.problem, str)


@FAST
@given(st.one_of(nasty_text, records), st.booleans())
def test_any_output_is_a_typed_survey_or_a_transport_error(text: str, ended: bool) -> None:
    if ended:
        text += frame(Tag.END)
    try:
        survey = parse_import(text, "/home/brokeforge")
    except TransportError as exc:
        assert str(exc).startswith("import output cannot be trusted")
        return
    _checked(survey)


# --- the real writer and reader ------------------------------------------------------------------

SEPARATORS = [b"\0", b"\n", b"\r\n", b"\x0b", "\u2028".encode(), b"\x85", b" "]
forged = st.lists(st.tuples(st.sampled_from(SEPARATORS), st.sampled_from(TAGS).map(str.encode),
                            st.sampled_from([b"", b" evil.example.com", b" 99", b"\xff%s'"]))
                  .map(b"".join), min_size=1, max_size=5).map(b"".join)
hostile = st.one_of(st.binary(min_size=1, max_size=120), forged)
SHOP, OTHER = "shop.example.com", "other.example.com"


@functools.cache
def _app() -> Path:
    return make_app_repo(Path(tempfile.mkdtemp(prefix="import-app-")) / "app")


def _survey(base: Path) -> Survey:
    command = import_command(str(base))
    result = asyncio.run(LocalTransport().run(command.text, stdin=command.stdin, timeout=60))
    assert result.ok, result.stderr
    return parse_import(result.stdout, str(base))


def _name(raw: bytes) -> bytes:
    name = raw.replace(b"/", b"_").replace(b"\0", b"_")[:200]
    return b"x" + name if name in (b".", b"..") or name.startswith(b".") else name


@settings(max_examples=30, deadline=None)
@given(hostile, hostile, hostile)
def test_what_a_server_holds_never_changes_another_site_s_answer(dirname: bytes, origin: bytes,
                                                                 entry: bytes) -> None:
    with tempfile.TemporaryDirectory() as where:
        base = Path(where) / "srv"
        brokeforge_site(base, SHOP, _app())
        baseline = {site.name: site for site in _survey(base).sites}[SHOP]
        live = brokeforge_site(base, OTHER, _app())
        subprocess.run([b"git", b"config", b"remote.origin.url", origin.replace(b"\0", b"")], cwd=live, check=True)
        odd = _name(entry)
        (live / odd.decode("utf-8", "surrogateescape")).symlink_to(b"../shared/".decode() + odd.decode(
            "utf-8", "surrogateescape"))
        strange = base / "deployments" / _name(dirname).decode("utf-8", "surrogateescape")
        strange.mkdir(exist_ok=True)
        if not (base / strange.name).exists():
            (base / strange.name).symlink_to(live)
        survey = _survey(base)
        _checked(survey)
        shop = [site for site in survey.sites if site.name == SHOP]
        assert shop == [baseline], survey
        assert RECORD_END not in "".join(s.origin or "" for s in survey.sites)
        shutil.rmtree(base)
        assert LIVE in {s.release for s in survey.sites}
