"""The probe's reader (remote/probe.py): `parse_probe` on records as the shell frames them, and
`gather` (send the probe, read it) through the local transport and SSH, against hostile server
data planted in real directories and git repositories: no site's files, no ref name can forge
another site's facts, crash the probe or reach a terminal raw. Reusing parsed manifests and link
targets across probes never hides a change on disk.

What the probe command itself finds on disk (the writer, remote/protocol/probing.py) is
tests/remote/protocol/test_probing.py's.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.facts import BranchHead, ProbeSite, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME
from reconciler.core.manifest import Manifest
from reconciler.core.plan import FailureMemory, Plan
from reconciler.core.rollout import plan_site
from reconciler.core.status import Health, Sync
from reconciler.remote.lock import Owner
from reconciler.remote.probe import gather
from reconciler.remote.protocol import probing
from reconciler.remote.protocol.probing import frame, parse_probe
from reconciler.remote.transport.local import LocalTransport
from tests.support import app_commit, git, make_app_repo
from tests.support.probe_server import (
    DOMAIN,
    HEAD,
    MAIN,
    OLD,
    R_BADDATE,
    R_NEWER,
    R_OK,
    SITE_NAMES,
    build_server,
    manifest,
    no_pwned,
    release,
    run_probe,
)
from tests.support.sshd import SshServer


@pytest.fixture
def app(tmp_path: Path) -> Path:
    # a repository path with shell metacharacters but no whitespace (whitespace is refused by validation)
    return make_app_repo(tmp_path / "app;touch${IFS}pwned$(touch${IFS}pwned)")


# --------------------------------------------------------------------------- tag heads


def test_tag_head_parsing_prefers_the_peeled_line_and_nothing_looser() -> None:
    key = ("/srv/git/app.git", "refs/tags/v1")
    tag_object, commit, decoy = "1" * 40, "2c" * 20, "3" * 40

    def head(*lines: str, rc: int = 0) -> BranchHead:
        facts = parse_probe(framed(("@heads", f"0 {rc} " + "\n".join(lines))), [], [key])
        return facts.heads[key]

    assert head(f"{tag_object}\trefs/tags/v1", f"{commit}\trefs/tags/v1^{{}}") == BranchHead(commit)
    assert head(f"{commit}\trefs/tags/v1^{{}}", f"{tag_object}\trefs/tags/v1") == BranchHead(commit)  # any order
    assert head(f"{commit}\trefs/tags/v1") == BranchHead(commit)  # lightweight: no peeled line
    for decoy_ref in ("zzz/refs/tags/v1^{}", "refs/tags/v1^{}x", "refs/tags/v1 ^{}", "refs/tags/v1^{commit}",
                      "refs/heads/v1^{}", "refs/tags/v1\u2028^{}"):
        assert head(f"{decoy}\t{decoy_ref}", f"{tag_object}\trefs/tags/v1",
                    f"{commit}\trefs/tags/v1^{{}}") == BranchHead(commit), decoy_ref
        assert head(f"{decoy}\t{decoy_ref}", f"{commit}\trefs/tags/v1") == BranchHead(commit), decoy_ref
    assert head(f"{decoy}\tzzz/refs/tags/v1^{{}}").error == "tag 'v1' not found in /srv/git/app.git"
    assert head(f"{commit.upper()}\trefs/tags/v1^{{}}", f"{tag_object}\trefs/tags/v1") == BranchHead(tag_object)
    two = head(f"{commit}\trefs/tags/v1^{{}}", f"{decoy}\trefs/tags/v1^{{}}")
    assert two.sha is None and two.error == "tag 'v1' is listed with 2 different commits"
    failed = head("fatal: could not read from remote repository", rc=128)
    assert failed == BranchHead(None, "fatal: could not read from remote repository", unreachable=True)


# --------------------------------------------------------------------------- through the local transport


def test_gather_through_local_transport_is_one_command(tmp_path: Path, app: Path) -> None:
    base = tmp_path / "a b;touch pwned"
    build_server(base)
    sites = [ProbeSite(name, str(base)) for name in SITE_NAMES]
    heads = [(str(app), MAIN), (str(app), "refs/heads/nope")]
    transport = LocalTransport()

    async def go() -> ServerFacts:
        return await gather(transport, sites, heads, timeout=60)

    facts = asyncio.run(go())
    no_pwned(tmp_path)
    assert transport.round_trips == 1
    assert facts.sites[DOMAIN].active_release == R_OK
    assert facts.sites["dir.example.com"].path_kind == "dir"
    assert facts.heads[(str(app), MAIN)] == BranchHead(git(app, "rev-parse", "HEAD"))
    assert facts.heads[(str(app), "refs/heads/nope")].sha is None


# --------------------------------------------------------------------------- parse_probe on its own


def framed(*records: tuple[str, ...]) -> str:
    """Probe output as the shell prints it: NUL-ended records, then the end record."""
    return "".join(frame(*record) for record in records) + frame("@end")


def test_parse_probe_ignores_unknown_sites_and_fills_missing_ones() -> None:
    sites = [ProbeSite("a.example.com", "/srv"), ProbeSite("b.example.com", "/srv")]
    output = framed(
        ("@site", "evil.example.com"), ("@provisioned",), ("@release", R_OK),
        ("@site", "a.example.com"), ("@provisioned",), ("@shared",), ("@release", R_OK), ("@release", R_BADDATE),
        ("@manifest", "{broken"),
    )
    facts = parse_probe(output, sites, [])
    assert set(facts.sites) == {"a.example.com", "b.example.com"}
    assert set(facts.sites["a.example.com"].releases) == {R_OK}
    assert facts.sites["a.example.com"].releases[R_OK].manifest is None  # the manifest was R_BADDATE's
    b = facts.sites["b.example.com"]
    assert (b.path_kind, b.provisioned, b.releases) == ("missing", False, {})


def mjson(**fields: object) -> str:
    """A manifest's JSON: a minimal valid one, with `fields` changed."""
    return json.dumps({"commit": HEAD, "branch": "main", "repository": "r", "build_key": "k", "status": "success",
                       **fields})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (manifest(HEAD, "success").to_json(), manifest(HEAD, "success")),
        (mjson(extra=1), Manifest(HEAD, "main", "r", "k", "success")),
        (mjson(branch="m\x1b[2J", status="failed", message="\x1b]0;PWNED\x07"),
         Manifest(HEAD, "m\\x1b[2J", "r", "k", "failed", message="\\x1b]0;PWNED\\x07")),  # escaped
        (mjson(commit="x"), None),
        (mjson(commit=HEAD.upper()), None),  # a sha is lower-case hex
        (mjson(commit=HEAD + "\n"), None),
        (mjson(status="ok"), None),
        (mjson(branch=1), None),
        (mjson(declarations_commit="HEAD"), None),
        (mjson(build_key="k k"), None),
        ('{"commit": "x"}', None),  # required fields missing
        ("[" * 200_000, None),  # a bomb: refused before json.loads (no RecursionError)
        ('{"a":' * 100 + "1" + "}" * 100, None),  # deeper than the decoder reads
        ("[]", None),
        ('["commit"]', None),
        ('"commit branch repository build_key status"', None),
        ("null", None),
        ("42", None),
        ("", None),
        ("{not json", None),
    ],
)
def test_manifest_from_json(text: str, expected: Manifest | None) -> None:
    assert Manifest.from_json(text) == expected


# --------------------------------------------------------------------------- hostile server data
#
# Each of these would fail if the probe did not frame its records with NUL and validate every field.


def _commit_on_branch(app: Path, branch: str, message: str) -> str:
    git(app, "checkout", "-q", "-b", branch)
    sha = app_commit(app, message)
    git(app, "checkout", "-q", "main")
    return sha


def _update_ref(app: Path, ref: bytes, sha: str) -> None:
    """A ref whose name is bytes (git accepts any byte but controls, space and a few ASCII signs)."""
    subprocess.run([b"git", b"check-ref-format", ref], cwd=app, check=True)
    subprocess.run([b"git", b"update-ref", ref, sha.encode()], cwd=app, check=True)


def test_a_ref_name_cannot_forge_the_branch_head(tmp_path: Path, app: Path) -> None:
    """A pusher of any branch names a ref so that U+2028 would split it into a fake
    `<sha> refs/heads/main` line: main still resolves to its own sha, and a `\\xff` in another
    ref name does not fail the probe."""
    main_sha = git(app, "rev-parse", "HEAD")
    evil = _commit_on_branch(app, "feature/x", "EVIL unreviewed")
    forged = f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main".encode()
    _update_ref(app, forged, evil)
    _update_ref(app, f"refs/heads/zzz\u0085{evil}\u2029refs/heads/main\u2029/refs/heads/main".encode(), evil)
    _update_ref(app, b"refs/heads/zzz\xff/refs/heads/main", evil)
    _update_ref(app, b"refs/heads/\xff\xfe", evil)
    heads = [(str(app), MAIN), (str(app), "refs/heads/feature/x")]
    facts = asyncio.run(gather(LocalTransport(), [], heads, timeout=60))
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)
    assert facts.heads[(str(app), "refs/heads/feature/x")] == BranchHead(evil)


def test_a_hostile_ref_name_over_ssh_fails_neither_the_probe_nor_other_heads(sshd_session: SshServer,
                                                                              tmp_path: Path, app: Path) -> None:
    """Over SSH the output is decoded leniently: one `\\xff` ref name does not fail the probe of
    every site on the server; `main` and another repository both resolve."""
    from reconciler.remote.transport.ssh import SshOptions, SshTransport

    main_sha = git(app, "rev-parse", "HEAD")
    evil = _commit_on_branch(app, "feature/x", "EVIL")
    _update_ref(app, b"refs/heads/zzz\xff/refs/heads/main", evil)
    _update_ref(app, f"refs/heads/zzz\u2028|{evil}\u3000refs/heads/main\u2028/refs/heads/main".encode(), evil)
    clean = make_app_repo(tmp_path / "clean")
    base = tmp_path / "srv"
    release(base / "deployments" / DOMAIN, R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/{DOMAIN}/{R_OK}", base / DOMAIN)
    sites = [ProbeSite(DOMAIN, str(base))]
    heads = [(str(app), MAIN), (str(clean), MAIN)]

    async def go() -> ServerFacts:
        transport = SshTransport(sshd_session.destination, SshOptions(
            sshd_session.identity_file, sshd_session.known_hosts, connect_timeout=10.0))
        try:
            return await gather(transport, sites, heads, timeout=60)
        finally:
            await transport.close()

    facts = asyncio.run(go())
    assert facts.heads[(str(app), MAIN)] == BranchHead(main_sha)
    assert facts.heads[(str(clean), MAIN)] == BranchHead(git(clean, "rev-parse", "HEAD"))
    assert facts.sites[DOMAIN].active_release == R_OK


def _server_with_victim(base: Path) -> None:
    """Site a: a live release and an older one, both successful. Site z: whatever the test plants."""
    deployments = base / "deployments" / "a.example.com"
    (deployments / "shared").mkdir(parents=True)
    release(deployments, R_OK, manifest(HEAD, "success"))
    release(deployments, R_NEWER, manifest(OLD, "success"))
    os.symlink(f"deployments/a.example.com/{R_NEWER}", base / "a.example.com")
    (base / "deployments" / "z.example.com" / "shared").mkdir(parents=True)


VICTIM_SITES = ["a.example.com", "z.example.com", "b.example.com"]


def _probe_sites(base: Path, cwd: Path) -> ServerFacts:
    sites = [ProbeSite(name, str(base)) for name in VICTIM_SITES]
    return parse_probe(run_probe(probing.probe(sites, []), cwd), sites, [])


def test_a_symlink_target_cannot_forge_another_sites_records(tmp_path: Path) -> None:
    """z's symlink target carries `\\n@site a.example.com\\n@link ...` and fake releases: a's facts
    stay exactly a's (else prune would delete a's releases, the live one included)."""
    clean = tmp_path / "clean"
    _server_with_victim(clean)
    expected = _probe_sites(clean, tmp_path).sites["a.example.com"]

    base = tmp_path / "srv"
    _server_with_victim(base)
    fake = [f"@release 0{n}012099-000000\n@manifest " + manifest(OLD, "success").to_json() for n in range(1, 10)]
    payload = "\n".join([
        f"deployments/z.example.com/{R_OK}", "@site a.example.com",
        "@link deployments/a.example.com/01012099-000013", "@provisioned", "@shared", *fake,
        f"@release {R_OK}", f"@release {R_NEWER}", "@site z.example.com",
        f"@link deployments/z.example.com/{R_OK}",
        "\x00@site a.example.com"[1:], "@end",
    ])
    # Every framing this probe ever used, and the one it uses now (NUL cannot be in a path).
    os.symlink(payload + "\n", base / "z.example.com")
    os.symlink("x\n@site a.example.com\n@link /etc\n@dangling", base / "b.example.com")
    facts = _probe_sites(base, tmp_path)
    a = facts.sites["a.example.com"]
    assert (a.link_target, a.path_kind, a.dangling, a.provisioned, a.shared) == (
        f"deployments/a.example.com/{R_NEWER}", "symlink", False, True, True)
    assert set(a.releases) == set(expected.releases) == {R_OK, R_NEWER}
    assert a.active_release == R_NEWER and a.problem is None
    assert {n: r.manifest for n, r in a.releases.items()} == {n: r.manifest for n, r in expected.releases.items()}
    z = facts.sites["z.example.com"]
    assert z.path_kind == "symlink" and z.link_target is None and z.active_release is None  # not a path of ours
    assert z.releases == {} and z.problem is None
    assert facts.sites["b.example.com"].active_release is None


def test_a_symlink_target_with_a_heads_record_does_not_crash_the_probe(tmp_path: Path, app: Path) -> None:
    """`x\\n@heads ² 0` as a site symlink target is that link's text, not a head record to parse
    (int('²') would raise ValueError for every site)."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    os.symlink("x\n@heads \u00b2 0", base / "z.example.com")
    os.symlink("x\n@heads 0 0\n|" + "f" * 40 + "\trefs/heads/main", base / "b.example.com")
    sites = [ProbeSite(name, str(base)) for name in VICTIM_SITES]
    heads = [(str(app), MAIN)]
    facts = parse_probe(run_probe(probing.probe(sites, heads), tmp_path), sites, heads)
    assert facts.heads[(str(app), MAIN)] == BranchHead(git(app, "rev-parse", "HEAD"))
    assert facts.sites["a.example.com"].active_release == R_NEWER
    for name in ("z.example.com", "b.example.com"):
        site = facts.sites[name]
        assert site.path_kind == "symlink" and site.active_release is None and site.problem is None


def test_a_manifest_bomb_is_that_sites_problem_only(tmp_path: Path) -> None:
    """A manifest of 200,000 `[` is refused unread (no RecursionError aborting the whole pass):
    that site is Unknown with the reason, other sites are planned as usual."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    bomb = "01012020-000000"
    release(base / "deployments" / "z.example.com", bomb, "[" * 200_000)
    release(base / "deployments" / "z.example.com", R_OK, manifest(HEAD, "success"))
    os.symlink(f"deployments/z.example.com/{R_OK}", base / "z.example.com")
    facts = _probe_sites(base, tmp_path)
    z = facts.sites["z.example.com"]
    assert z.problem == (f"malformed manifest deployments/z.example.com/{bomb}/{MANIFEST_NAME}: "
                         "larger than 65536 bytes (200000)")
    assert z.releases[bomb].corrupt and z.releases[bomb].manifest is None
    assert z.releases[R_OK].manifest == manifest(HEAD, "success")
    assert facts.sites["a.example.com"].problem is None
    assert facts.sites["a.example.com"].active_release == R_NEWER
    # The planner leaves z alone, Unknown, saying why; a is planned as usual.
    declared = SiteDeclaration.model_validate({"domain": "z.example.com", "server": "local", "base_path": str(base),
                                               "repository": "/srv/git/z.git"})
    plan = plan_site(declared, z, BranchHead(OLD), FailureMemory(), datetime.now(UTC))
    assert plan == Plan(Sync.UNKNOWN, Health.UNKNOWN, z.problem, actions=())
    # Under the size limit but deeper than any manifest: refused unread as well.
    (base / "deployments" / "z.example.com" / bomb / MANIFEST_NAME).write_text("[" * 60_000)
    assert _probe_sites(base, tmp_path).sites["z.example.com"].problem == (
        f"malformed manifest deployments/z.example.com/{bomb}/{MANIFEST_NAME}: nesting deeper than 32")


def test_lock_owner_bombs_are_no_owner(tmp_path: Path) -> None:
    """A lock owner of 200,000 `[` (a RecursionError to json) or `"pid": 2**70` (an OverflowError)
    is read as the lock's text and parses as no owner, without an exception."""
    base = tmp_path / "srv"
    _server_with_victim(base)
    lock_dir = base / "deployments" / "z.example.com" / ".reconciler-lock"
    lock_dir.mkdir()
    (lock_dir / "owner").write_text("[" * 200_000 + "\n")
    z = _probe_sites(base, tmp_path).sites["z.example.com"]
    assert z.lock == "[" * 200_000 and Owner.from_text(z.lock) is None and z.problem is None
    huge = {"instance": "i", "run": "r", "host": "h", "pid": 2**70, "purpose": "", "since": 1.0}
    (lock_dir / "owner").write_text(json.dumps(huge) + "\n")
    z = _probe_sites(base, tmp_path).sites["z.example.com"]
    assert z.lock is not None and Owner.from_text(z.lock) is None


def test_unlinked_shared_entries_are_read_only_for_entries_the_site_has() -> None:
    """`@unlinked` names a shared entry of the live release that is no symlink;
    a name the site does not share is a problem of that site only, never another site's fact."""
    sites = [ProbeSite("a.example.com", "/srv", (".env", "storage")), ProbeSite("b.example.com", "/srv", (".env",))]
    output = "".join([frame(probing.Tag.SITE, "a.example.com"), frame(probing.Tag.UNLINKED, ".env"),
                      frame(probing.Tag.UNLINKED, "/etc/passwd"), frame(probing.Tag.SITE, "b.example.com"),
                      frame(probing.Tag.UNLINKED, ".env"), frame(probing.Tag.END)])
    facts = parse_probe(output, sites, [])
    a, b = facts.sites["a.example.com"], facts.sites["b.example.com"]
    assert a.unlinked == [".env"] and a.problem is not None and "/etc/passwd" in a.problem
    assert b.unlinked == [".env"] and b.problem is None


def test_remembered_manifests_and_link_reads_follow_the_files(tmp_path: Path) -> None:
    """Parsed manifests are remembered by their text and link targets by (base, domain, target):
    a manifest rewritten on the server (a build recorded failed, a hand edit) or a link switched is
    seen by the next probe, and a manifest that stops parsing is corrupt again, not remembered."""
    from reconciler.remote.transport.local import LocalTransport

    base = tmp_path / "srv"
    release, other = "01012025-000000", "02012025-000000"
    for name in (release, other):
        (base / "deployments" / "m.example.com" / name).mkdir(parents=True)
    os.symlink(f"deployments/m.example.com/{release}", base / "m.example.com")
    manifest = base / "deployments" / "m.example.com" / release / MANIFEST_NAME
    good = Manifest("a" * 40, "main", "/srv/app", "k", "success", "2025-01-01T00:00:00Z")
    sites = [ProbeSite("m.example.com", str(base))]

    def probe() -> SiteFacts:
        return asyncio.run(gather(LocalTransport(), sites, [], timeout=30)).sites["m.example.com"]

    manifest.write_text(good.to_json() + "\n")
    first = probe()
    assert first.releases[release].status == "success" and first.active_release == release
    manifest.write_text(dataclasses.replace(good, status="failed").to_json() + "\n")
    assert probe().releases[release].status == "failed"
    manifest.write_text(good.to_json() + "\n")
    assert probe().releases[release].status == "success"
    manifest.write_text(good.to_json()[:-5] + "\n")  # cut short
    assert probe().releases[release].corrupt
    os.remove(base / "m.example.com")
    os.symlink(f"deployments/m.example.com/{other}", base / "m.example.com")
    assert probe().active_release == other
