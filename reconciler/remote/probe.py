"""The probe: ONE remote command per server that gathers the facts of every site on it.

The command is built by `remote.protocol.probing.probe` (its script travels on stdin), which also defines
the framing shared with the strict reader here (RECORD_END, Tag): writer and reader use the same
constants. This module reads: `parse_probe`, and `gather` (send, then read).

The probe reports, per site, the site path (symlink target, or a directory/file that is
in the way), the release directories with their manifests, the shared dir and the lock,
and resolves every (repository, ref) head (a branch's head, or the commit a tag names) with
`git ls-remote` run in parallel on the server, which reaches the repositories exactly as
deploys will. Cost grows with servers,
not with sites. Each ls-remote has its own time bound, well within the probe's (probing.head_bounds):
a git host that does not answer is the error of that head's sites (`@stalled`), never a timeout
of the whole probe, which would be the server's, every site on it Unknown.

Framing. Everything the probe prints is a sequence of records, each `@tag` or `@tag value`
followed by a NUL byte, and the last record is `@end`. Values come from the server (a symlink
target, the first line of a manifest or of the lock owner, a release's HEAD, ls-remote output)
and are untrusted, so the separator must be a byte no value can contain:

- Every value is printed from a shell variable with `printf '%s\\0'`. A variable of dash,
  bash, busybox ash, ksh or mksh is a C string: it cannot hold a NUL (`read` and `$(...)`
  drop NUL bytes), so a value can never end its record early or start another one, whatever
  newlines, U+2028, U+0085 or `@site` text it carries. Symlink targets and ref names cannot
  hold a NUL in the first place.
- A shell that does keep NUL bytes in variables (zsh) is detected once per probe (one
  subshell), and every value is then passed through `tr -d '\\000'` instead: slower, still sound.
- This costs no process per value on the usual shells: the release loop reads a manifest with
  the shell's own `read` and prints it with the `printf` builtin, as before (one subshell per
  probe for the NUL check; ls-remote's exact-ref filter is one awk instead of head and sed).
  Encoding every value (base64, od) would have cost a process per release; NUL framing makes
  that unnecessary.
- Site links are read by one GNU `find -printf` per probe (`@at <link path>`, then `@link
  <target>`, exact). Without GNU find (BusyBox), `$(readlink ...)` per site, which drops
  newlines a symlink target ends with: a target `R<newline>` then reads as `R`, which only the
  deploy user can plant (and they can edit R itself): it cannot reach another site or break a
  record. An `@at` path that is no probed site's link selects no site.
- Absence of the final `@end` (the command died, output cut short), a record with an unknown
  tag or a malformed value of our own making (an index, an exit status, a head's bound) means
  the output as a whole cannot be trusted: `parse_probe` raises TransportError for the server.
  Nothing a site's data holds can cause that.

Decoding: the output is decoded as UTF-8 with errors="replace" (the transports do so), which
never merges a NUL byte into a replacement character, so splitting the text on NUL is splitting
the bytes on NUL. Inside a record every field is validated (`core.wire`): a release name must be
a real `ddMMYYYY-HHMMSS`, a sha 40 or 64 lower-case hex digits, ls-remote lines are split on
`\\n` and `\\t` only and the ref compared exactly with `refs/heads/<branch>` or
`refs/tags/<tag>` (or that ref with `^{}`, an annotated tag's peeled line); manifests go through
the bounded JSON decoder. A datum that fails is that site's problem (`SiteFacts.problem`) or,
for a merely unparseable manifest, a corrupt release, never an exception and never another
site's fact.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from reconciler.core import wire
from reconciler.core.facts import BranchHead, ProbeSite, ReleaseFacts, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, SitePaths, is_release
from reconciler.core.manifest import Manifest
from reconciler.errors import TransportError
from reconciler.remote.protocol import probing
from reconciler.remote.protocol.probing import RECORD_END, Tag
from reconciler.remote.transport import Transport

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_LINK = 4096  # PATH_MAX: a longer symlink target is not one of ours
MAX_GIT_SECONDS = 10**7  # a bound in a stalled head record (ours: at most half of command_timeout)


def frame(tag: str, value: str | None = None) -> str:
    """One record as the probe's shell prints it (for tests and tools that build output)."""
    return f"{tag}{RECORD_END}" if value is None else f"{tag} {value.replace(RECORD_END, '')}{RECORD_END}"


def _broken(why: str) -> TransportError:
    return TransportError(f"probe output cannot be trusted: {why}")


def _plain_path(target: str) -> str | None:
    """A symlink target that may name one of our releases: a plain path, no control characters."""
    if not target or len(target) > MAX_LINK or _CONTROL_RE.search(target):
        return None
    return target


def unanswered(seconds: int) -> str:
    """Why a head is unknown when its git host did not answer (Tag.STALLED)."""
    if seconds == 0:
        return ("not asked: other sites' git hosts did not answer and used up the probe's time for git "
                "(git_timeout, half of command_timeout in all)")
    return f"the git host did not answer within {seconds}s (git_timeout)"


def ref_label(ref: str) -> str:
    """How a probed ref is named in messages: "branch 'main'", "tag 'v1.4.2'"."""
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix):
            return f"{kind} {wire.display(ref[len(prefix):])!r}"
    return f"ref {wire.display(ref)!r}"


def branch_head(key: tuple[str, str], rc: int, text: str) -> BranchHead:
    """What `git ls-remote <repository> <ref> <ref>^{}` said, exactly: the sha of the line whose
    ref (after the only tab) is `<ref>^{}` when there is one (an annotated tag, peeled: the
    commit it names, not the tag object), else of the line whose ref is `<ref>`; nothing looser.
    `key` is (repository, full ref: refs/heads/<branch> or refs/tags/<tag>)."""
    repository, ref = key
    if rc != 0:
        error = wire.display(text.strip())
        return BranchHead(None, error or f"git ls-remote exited {rc}")
    peeled_ref = ref + "^{}"
    exact: set[str] = set()
    peeled: set[str] = set()
    for line in text.split("\n"):
        sha, tab, name = line.partition("\t")
        if tab and (checked := wire.as_sha(sha)) is not None:
            if name == ref:
                exact.add(checked)
            elif name == peeled_ref:
                peeled.add(checked)
    shas = peeled or exact
    if len(shas) == 1:
        return BranchHead(shas.pop())
    if shas:
        return BranchHead(None, f"{ref_label(ref)} is listed with {len(shas)} different commits")
    return BranchHead(None, f"{ref_label(ref)} not found in {wire.display(repository)}")


class _Reader:
    """Applies the records of one probe output to ServerFacts, one record at a time."""

    def __init__(self, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> None:
        self.wanted = {site.domain: site for site in sites}
        self.by_link = {SitePaths(site.base_path, site.domain).site_link: site.domain for site in self.wanted.values()}
        self.head_keys = probing.head_order(heads)
        self.facts = ServerFacts()
        self.site: SiteFacts | None = None
        self.release: ReleaseFacts | None = None

    def record(self, tag: str, value: str) -> None:
        if tag == Tag.HEADS:
            self.site = self.release = None
            self.heads(value)
        elif tag == Tag.STALLED:
            self.site = self.release = None
            self.stalled(value)
        elif tag == Tag.AT:
            # The batched link reads: the site whose link this is (probed above), else none.
            self.site = self.facts.sites.get(self.by_link.get(value, ""))
            self.release = None
        elif tag == Tag.SITE:
            known = self.wanted.get(value)
            self.site = SiteFacts(value, known.base_path) if known else None
            if self.site is not None:
                self.facts.sites[value] = self.site
            self.release = None
        elif self.site is not None:
            self.site_record(self.site, tag, value)

    def heads(self, value: str) -> None:
        index_text, _, rest = value.partition(" ")
        rc_text, _, text = rest.partition(" ")
        index = wire.parse_uint(index_text, len(self.head_keys) - 1) if self.head_keys else None
        rc = wire.parse_uint(rc_text, 255)
        if index is None or rc is None:
            raise _broken(f"a branch head record names head {wire.display(index_text, 20)!r}, "
                          f"exit status {wire.display(rc_text, 20)!r}")
        key = self.head_keys[index]
        self.facts.heads[key] = branch_head(key, rc, text)

    def stalled(self, value: str) -> None:
        """`<index> <seconds>`: that head's git host did not answer in time (0: not asked)."""
        index_text, _, seconds_text = value.partition(" ")
        index = wire.parse_uint(index_text, len(self.head_keys) - 1) if self.head_keys else None
        seconds = wire.parse_uint(seconds_text, MAX_GIT_SECONDS)
        if index is None or seconds is None:
            raise _broken(f"a stalled head record names head {wire.display(index_text, 20)!r}, "
                          f"seconds {wire.display(seconds_text, 20)!r}")
        self.facts.heads[self.head_keys[index]] = BranchHead(None, unanswered(seconds))

    def site_record(self, site: SiteFacts, tag: str, value: str) -> None:
        if tag == Tag.LINK:
            # Not a plain path: no release of ours is active (Degraded), nothing else follows.
            site.link_target, site.path_kind = _plain_path(value), "symlink"
        elif tag == Tag.DANGLING:
            site.dangling = True
        elif tag == Tag.PATH:
            if value not in ("dir", "file"):
                raise _broken(f"path kind {wire.display(value, 20)!r}")
            site.path_kind = value
        elif tag == Tag.PROVISIONED:
            site.provisioned = True
        elif tag == Tag.SHARED:
            site.shared = True
        elif tag == Tag.LOCK:
            site.lock = value.strip()
        elif tag == Tag.UNLINKED:
            wanted = self.wanted.get(site.domain)
            if wanted is None or value not in wanted.shared:
                site.note_problem(f"the probe reports shared entry {wire.display(value, 80)!r}, not one of the site's")
            elif value not in site.unlinked:
                site.unlinked.append(value)
        elif tag == Tag.NOTDIR:
            if probing.RELEASE_GLOB_RE.fullmatch(value):
                site.not_dirs.append(value)
        elif tag == Tag.RELEASE:
            # The shell glob only matches the shape; a name must also be a real date/time.
            self.release = site.releases.setdefault(value, ReleaseFacts(value)) if is_release(value) else None
        elif tag == Tag.MANIFEST and self.release is not None:
            self.manifest(site, self.release, value)
        elif tag == Tag.HEAD and self.release is not None:
            self.release.head = wire.as_sha(value)

    @staticmethod
    def manifest(site: SiteFacts, release: ReleaseFacts, text: str) -> None:
        try:
            release.manifest, release.corrupt = _parsed_manifest(text), False
        except wire.WireLimit as exc:
            # Nothing we write looks like this: someone shaped it. The site waits for a human.
            release.manifest, release.corrupt = None, True
            site.note_problem(f"malformed manifest deployments/{site.domain}/{release.name}/{MANIFEST_NAME}: {exc}")
        except wire.WireError:
            # Unparseable (cut short, emptied, edited by hand): the release is corrupt, as before.
            release.manifest, release.corrupt = None, True


@functools.lru_cache(maxsize=65536)
def _parsed_manifest(text: str) -> Manifest:
    """Manifest.parse, remembered by the manifest's text: a server's manifests rarely change,
    and every poll reads them all again (issue 15: parsing each one every pass was per-site CPU).
    Manifests are frozen, so one parsed value can serve every pass; a text that does not parse
    raises each time (not cached)."""
    return Manifest.parse(text)


def parse_probe(output: str | bytes, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> ServerFacts:
    """The facts in a probe's output. Never raises for anything a site's data holds; raises
    TransportError only when the output as a whole is not the probe's framing (cut short)."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    records = text.split(RECORD_END)
    if records[-1] != "":
        raise _broken("the output does not end with a complete record (cut short?)")
    records.pop()
    if not records or records[-1] != Tag.END:
        raise _broken("the output does not end with the probe's end record (cut short?)")
    records.pop()
    sites = list(sites)
    reader = _Reader(sites, heads)
    for number, record in enumerate(records):
        tag, space, value = record.partition(" ")
        if not (tag in probing.VALUE_TAGS if space else tag in probing.BARE_TAGS) or tag == Tag.END:
            raise _broken(f"record {number} is {wire.display(record, 60)!r}")
        reader.record(tag, value)
    for site in sites:
        reader.facts.sites.setdefault(site.domain, SiteFacts(site.domain, site.base_path))
    return reader.facts


async def gather(
    transport: Transport, sites: list[ProbeSite], heads: list[tuple[str, str]], *, timeout: float,
    git_timeout: float | None = None,
) -> ServerFacts:
    """Probe `sites` and resolve `heads` on one server, in one command that may take `timeout`;
    each head within `git_timeout` (probing.head_bounds)."""
    command = probing.probe(sites, heads, timeout, git_timeout)
    result = await transport.run(command.text, stdin=command.stdin, timeout=timeout)
    if not result.ok:
        raise TransportError(f"{transport.name}: probe failed (exit {result.exit_status}): {result.tail(5)}")
    try:
        return parse_probe(result.stdout, sites, heads)
    except TransportError as exc:
        raise TransportError(f"{transport.name}: {exc}") from exc
