"""parse_probe against anything a server can print, and against every server state a site can be in.

The probe's shell prints `@tag value\\0` records; a value comes from a shell variable, which
cannot hold a NUL. `serve()` below prints, in Python, exactly what the shell prints for a
modelled server (the same records, values with NUL removed, a manifest or owner cut at its
first line), so the properties hold for every state hypothesis can invent:

- any bytes at all: ServerFacts, or TransportError (not the probe's framing), nothing else;
- whatever site z's files hold, site a's facts are exactly a's;
- whatever refs a repository holds (U+2028, U+0085, spaces, \\xff...), `main` is main's sha;
- a head whose git host did not answer (`@stalled <index> <seconds>`) is that head's error, and
  no other head's output can forge one; a malformed one is not the probe's framing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts, SiteFacts
from reconciler.core.manifest import Manifest
from reconciler.errors import TransportError
from reconciler.remote.protocol.heads import branch_head
from reconciler.remote.protocol.probing import parse_probe
from tests.properties.strategies import FAST, NASTY, first_line, nasty_text, shell_value

BASE = "/srv"
A, Z = "a.example.com", "z.example.com"
SITES = [ProbeSite(A, BASE), ProbeSite(Z, BASE)]
R1, R2 = "01012020-000000", "02012020-000000"
SHA_A = "a" * 40
GOOD = Manifest(SHA_A, "main", "/srv/git/a.git", "0123456789abcdef", "success")


@dataclass
class Release:
    name: str
    manifest: str | None = None  # the file's content, any text
    head: str | None = None      # `git rev-parse HEAD` output when there is no manifest
    is_dir: bool = True


@dataclass
class Site:
    domain: str
    link: str | None = None  # symlink target (no NUL: the kernel forbids it)
    dangling: bool = False
    provisioned: bool = True
    shared: bool = True
    lock: str | None = None  # the owner file's content
    releases: list[Release] = field(default_factory=list)


def emit(tag: str, value: str) -> str:
    """The shell's `emit`: printf '%s %s\\0' of a variable."""
    return f"{tag} {shell_value(value)}\0"


def serve(sites: list[Site], heads: tuple[tuple[int, int, str], ...] = (), batched: bool = False) -> str:
    """The probe's output for these sites, as the shell prints it. `batched`: as with GNU find,
    every link read after the sites by one `find -printf` (`@at <link path>`, then `@link` with
    the exact target: no shell variable, so trailing newlines stay; the kernel allows no NUL)."""
    out = []
    for site in sites:
        out.append(emit("@site", site.domain))
        if site.link is not None:
            if not batched:
                out.append(emit("@link", site.link))
            if site.dangling:
                out.append("@dangling\0")
        if not site.provisioned:
            continue
        out.append("@provisioned\0")
        if site.shared:
            out.append("@shared\0")
        if site.lock is not None:
            out.append(emit("@lock", first_line(site.lock)))
        for release in site.releases:
            if not release.is_dir:
                out.append(emit("@notdir", release.name))
                continue
            out.append(emit("@release", release.name))
            if release.manifest is not None:
                out.append(emit("@manifest", first_line(release.manifest)))
            elif release.head is not None:
                out.append(emit("@head", release.head.rstrip("\n")))
    if batched:
        for site in sites:
            if site.link is not None:
                out.append(f"@at {BASE}/{site.domain}\0@link {site.link.replace(chr(0), '')}\0")
    for index, rc, text in heads:
        out.append(emit(f"@heads {index} {rc}", text))
    return "".join(out) + "@end\0"


def victim() -> Site:
    return Site(A, link=f"deployments/{A}/{R2}", lock=None,
                releases=[Release(R1, GOOD.to_json()), Release(R2, GOOD.to_json())])


def facts_of(site: SiteFacts) -> tuple[object, ...]:
    return (site.link_target, site.path_kind, site.dangling, site.provisioned, site.shared, site.lock,
            {n: (r.manifest, r.head, r.corrupt) for n, r in site.releases.items()}, site.not_dirs,
            site.problem, site.active_release)


BASELINE = facts_of(parse_probe(serve([victim()]), [SITES[0]], []).sites[A])
assert facts_of(parse_probe(serve([victim()], batched=True), [SITES[0]], []).sites[A]) == BASELINE

release_names = st.one_of(st.sampled_from([R1, R2, "31022020-000000", "20200101-000000", "99999999-999999"]),
                          nasty_text)
releases = st.builds(Release, release_names, st.one_of(st.none(), nasty_text, st.just(GOOD.to_json())),
                     st.one_of(st.none(), nasty_text, st.just("b" * 40)), st.booleans())
hostile_sites = st.builds(Site, st.just(Z), st.one_of(st.none(), nasty_text), st.booleans(), st.booleans(),
                          st.booleans(), st.one_of(st.none(), nasty_text), st.lists(releases, max_size=4))


@FAST
@given(st.one_of(st.binary(), nasty_text.map(lambda t: t.encode("utf-8", "surrogatepass")), nasty_text,
                 nasty_text.map(lambda t: t + "\0@end\0")))
def test_any_output_is_facts_or_a_transport_error(output: bytes | str) -> None:
    try:
        facts = parse_probe(output, SITES, [("/srv/git/a.git", "main")])
    except TransportError as exc:
        assert str(exc).startswith("probe output cannot be trusted")
    else:
        assert isinstance(facts, ServerFacts) and set(facts.sites) == {A, Z}


@FAST
@given(hostile_sites, st.booleans(), st.booleans())
def test_no_datum_of_site_z_changes_site_a(z: Site, z_first: bool, batched: bool) -> None:
    sites = [z, victim()] if z_first else [victim(), z]
    facts = parse_probe(serve(sites, batched=batched), SITES, [])  # never raises: values cannot break the framing
    assert facts_of(facts.sites[A]) == BASELINE
    zf = facts.sites[Z]
    # z's own facts are its own data, validated: only release names of ours, only a plain link.
    assert all(name in (R1, R2) for name in zf.releases)
    assert zf.link_target is None or ("\n" not in zf.link_target and "\0" not in zf.link_target)
    for release in zf.releases.values():
        assert release.head is None or len(release.head) in (40, 64)


@FAST
@given(st.lists(st.sampled_from([*NASTY, "@release " + R1, "@manifest " + GOOD.to_json(), "@provisioned"]),
                max_size=12).map("".join))
def test_a_symlink_target_is_one_value(target: str) -> None:
    z = Site(Z, link=target, provisioned=False)
    for batched in (False, True):
        facts = parse_probe(serve([z, victim()], batched=batched), SITES, [])
        assert facts_of(facts.sites[A]) == BASELINE
    facts = parse_probe(serve([z, victim()]), SITES, [])
    assert facts_of(facts.sites[A]) == BASELINE
    assert facts.sites[Z].releases == {} and facts.sites[Z].active_release is None


# --------------------------------------------------------------------------- branch heads

MAIN = "refs/heads/main"
TAG = "refs/tags/v1.4.2"
HEAD_KEYS = [("/srv/git/app.git", MAIN)]
TAG_KEYS = [("/srv/git/app.git", TAG)]
# What git allows in a ref name is wide: any byte but ASCII controls, space, ~^:?*[\\ and a few
# sequences. Generated names go beyond that (spaces, tabs, controls) on purpose.
ref_names = st.one_of(
    st.lists(st.sampled_from(["refs/heads/", "zzz", "main", "/", "\u2028", "\u2029", "\u0085", "\x1c", " ",
                              "\u3000", "|", "\ufffd", "a" * 40, "\t", "refs/heads/main"]), min_size=1, max_size=8)
    .map("".join),
    st.text(min_size=1, max_size=30),
)
ref_shas = st.text(alphabet="0123456789abcdef", min_size=40, max_size=40)


def ls_remote(refs: list[tuple[str, str]]) -> str:
    return "".join(f"{sha}\t{name}\n" for sha, name in refs)


def awk_exact(output: str, ref: str) -> str:
    """The probe's filter: awk -F '\\t' '$2 == ENVIRON["R"] || $2 == ENVIRON["R"] "^{}"' (records
    end at \\n only)."""
    lines = output.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    kept = [line for line in lines if [*line.split("\t"), ""][1] in (ref, ref + "^{}")]
    return "\n".join(kept)  # $(...) drops the trailing newline


@FAST
@given(st.lists(st.tuples(ref_shas, ref_names), max_size=8, unique_by=lambda r: r[1]), ref_shas, st.booleans(),
       st.booleans())
def test_no_ref_name_changes_another_refs_sha(refs: list[tuple[str, str]], main_sha: str, has_main: bool,
                                              filtered: bool) -> None:
    # `<ref>^{}` is no name git allows ('^' is forbidden): only the server prints it, for `<ref>` itself.
    refs = [(sha, name) for sha, name in refs
            if name not in (MAIN, MAIN + "^{}") and "\n" not in name and "\0" not in name]
    if has_main:
        refs.append((main_sha, MAIN))
    raw = ls_remote(refs)
    # With the shell's filter, and without it (the parser does not rely on the filter).
    text = awk_exact(raw, MAIN) if filtered else raw
    facts = parse_probe(serve([], ((0, 0, text),)), [], HEAD_KEYS)
    head = facts.heads[HEAD_KEYS[0]]
    if has_main:
        assert head.sha == main_sha, (refs, head)
    else:
        assert head.sha is None and head.error and "not found" in head.error


tag_decoys = st.lists(st.tuples(ref_shas, st.one_of(
    ref_names, st.sampled_from(["zzz/" + TAG, "zzz/" + TAG + "^{}", TAG + "x", TAG + "^{}x", "refs/heads/v1.4.2",
                                "refs/heads/v1.4.2^{}", TAG + "^{commit}", TAG + " ^{}"]))),
    max_size=8, unique_by=lambda r: r[1])


@FAST
@given(tag_decoys, st.one_of(st.none(), ref_shas), st.one_of(st.none(), ref_shas), st.booleans(), st.booleans())
def test_a_tag_is_its_peeled_commit_and_no_decoy_moves_it(refs: list[tuple[str, str]], tag_sha: str | None,
                                                         peeled_sha: str | None, filtered: bool,
                                                         peeled_first: bool) -> None:
    """An annotated tag lists the tag object (`<tag>`) and the commit it names (`<tag>^{}`):
    the commit is taken. A lightweight tag lists only `<tag>`. No other line counts, whatever
    its name (suffix matches, other kinds of peel, a branch of the same name)."""
    refs = [(sha, name) for sha, name in refs
            if name not in (TAG, TAG + "^{}") and "\n" not in name and "\0" not in name]
    ours = [(sha, name) for sha, name in ((tag_sha, TAG), (peeled_sha, TAG + "^{}")) if sha is not None]
    if peeled_first:
        ours.reverse()
    raw = ls_remote([*refs, *ours])
    text = awk_exact(raw, TAG) if filtered else raw
    head = parse_probe(serve([], ((0, 0, text),)), [], TAG_KEYS).heads[TAG_KEYS[0]]
    expected = peeled_sha if peeled_sha is not None else tag_sha
    if expected is not None:
        assert head.sha == expected, (refs, ours, head)
    else:
        assert head.sha is None and head.error and "tag 'v1.4.2' not found" in head.error


def test_a_ref_name_with_line_separators_cannot_pose_as_the_branch() -> None:
    evil = "e" * 40
    refs = [("1" * 40, MAIN), (evil, f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main")]
    for text in (ls_remote(refs), awk_exact(ls_remote(refs), MAIN)):
        facts = parse_probe(serve([], ((0, 0, text),)), [], HEAD_KEYS)
        assert facts.heads[HEAD_KEYS[0]].sha == "1" * 40


@FAST
@given(st.integers(min_value=1, max_value=255), nasty_text)
def test_a_failed_ls_remote_is_an_escaped_error(rc: int, text: str) -> None:
    head = parse_probe(serve([], ((0, rc, text),)), [], HEAD_KEYS).heads[HEAD_KEYS[0]]
    assert head.sha is None and head.error and all(ch.isprintable() for ch in head.error)


@pytest.mark.parametrize("output", [
    "", "@end", "@site a.example.com\0", "@site a.example.com\0@end\0@end\0", "@bogus x\0@end\0",
    "@heads 5 0 x\0@end\0", "@heads \u00b2 0 x\0@end\0", "@heads 0 \u00b2 x\0@end\0", "@heads 0 256 x\0@end\0",
    "@site a.example.com\0@path other\0@end\0", "@dangling x\0@end\0", "@site\0@end\0",
    "\n@site a.example.com\0@end\0", "@site a.example.com\0@end\0trailing",
])
def test_output_that_is_not_the_probes_framing_fails_the_server(output: str) -> None:
    """Only our own side can produce these (a died command, stray output): no value can."""
    with pytest.raises(TransportError):
        parse_probe(output, [ProbeSite(A, BASE)], HEAD_KEYS)


# --------------------------------------------------------------------------- heads whose git host did not answer

# A head's git host that did not answer within its bound: `@stalled <index> <seconds>` (0: not asked,
# the probe's time for git hosts was spent). Index and seconds are the probe's own numbers.
MANY_KEYS = [(f"/srv/git/app{n}.git", MAIN) for n in range(6)]
stall_forgeries = st.lists(st.one_of(nasty_text, st.sampled_from([
    "@stalled 0 3", "@stalled 1 0", "\0@stalled 0 3\0", "@stalled 0 3\0@end\0", "@heads 1 0 ", "\0@heads 1 0 "])),
    max_size=4).map("".join)


def stalled(index: int, seconds: int) -> str:
    return f"@stalled {index} {seconds}\0"


@FAST
@given(st.lists(st.one_of(st.tuples(st.just("answer"), ref_shas, stall_forgeries),
                          st.tuples(st.just("failed"), st.integers(1, 255).map(str), stall_forgeries),
                          st.tuples(st.just("stalled"), st.integers(0, 600).map(str), st.just(""))),
                min_size=len(MANY_KEYS), max_size=len(MANY_KEYS)), st.randoms())
def test_a_head_that_did_not_answer_is_that_heads_error_only(results: list[tuple[str, str, str]],
                                                              rnd: random.Random) -> None:
    """Whatever the other heads' git hosts printed (ls-remote output and git's errors are values: no
    text can start a record), each head is exactly its own: a sha, git's error, or `did not answer`."""
    records = []
    for index, (kind, value, noise) in enumerate(results):
        if kind == "answer":
            decoy = "refs/heads/zz" + noise.replace("\n", "").replace("\0", "")
            records.append(emit(f"@heads {index} 0", ls_remote([(value, MAIN), ("e" * 40, decoy)])))
        elif kind == "failed":
            records.append(emit(f"@heads {index} {value}", noise))
        else:
            records.append(stalled(index, int(value)))
    rnd.shuffle(records)  # heads finish in any order
    facts = parse_probe("".join(records) + "@end\0", [], MANY_KEYS)
    for key, (kind, value, noise) in zip(MANY_KEYS, results, strict=True):
        head = facts.heads[key]
        if kind == "answer":
            assert head == BranchHead(value), (kind, head)
        elif kind == "failed":
            assert head == branch_head(key, int(value), shell_value(noise)) and head.sha is None, head
        elif value == "0":
            assert head.sha is None and head.error and head.error.startswith("not asked: "), head
            assert not head.unreachable, "not asked is no outage of that host"
        else:
            assert head == BranchHead(None, f"the git host did not answer within {value}s (git_timeout)",
                                  unreachable=True), head


@pytest.mark.parametrize("output", [
    "@stalled\0@end\0", "@stalled 6 3\0@end\0", "@stalled 0\0@end\0", "@stalled 0 \0@end\0",
    "@stalled 0 x\0@end\0", "@stalled \u00b2 3\0@end\0", "@stalled 0 \u0663\0@end\0", "@stalled 0 3 4\0@end\0",
    "@stalled -1 3\0@end\0", "@stalled 0 -3\0@end\0", "@stalled 0 99999999999\0@end\0", "@stalled  0 3\0@end\0",
])
def test_a_malformed_stalled_record_fails_the_server(output: str) -> None:
    """Only our own side prints a stalled record, from its own numbers: anything else is not the
    probe's framing."""
    with pytest.raises(TransportError):
        parse_probe(output, [ProbeSite(A, BASE)], MANY_KEYS)


def test_a_stalled_record_without_heads_to_resolve_fails_the_server() -> None:
    with pytest.raises(TransportError):
        parse_probe(stalled(0, 3) + "@end\0", [ProbeSite(A, BASE)], [])
