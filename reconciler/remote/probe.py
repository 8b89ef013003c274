"""The probe: ONE remote command per server that gathers the facts of every site on it.

The probe reports, per site, the site path (symlink target, or a directory/file that is
in the way), the release directories with their manifests, the shared dir and the lock,
and resolves every (repository, branch) head with `git ls-remote` run in parallel on the
server, which reaches the repositories exactly as deploys will. Cost grows with servers,
not with sites.

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
- `$(readlink ...)` drops newlines a symlink target ends with. Keeping them would cost a fork
  per site; the only effect is that a target `R<newline>` reads as `R`, which only the deploy
  user can plant (and they can edit R itself): it cannot reach another site or break a record.
- Absence of the final `@end` (the command died, output cut short), a record with an unknown
  tag or a malformed value of our own making (an index, an exit status) means the output as a
  whole cannot be trusted: `parse_probe` raises TransportError for the server. Nothing a site's
  data holds can cause that.

Decoding: the output is decoded as UTF-8 with errors="replace" (the transports do so), which
never merges a NUL byte into a replacement character, so splitting the text on NUL is splitting
the bytes on NUL. Inside a record every field is validated (`core.wire`): a release name must be
a real `ddMMYYYY-HHMMSS`, a sha 40 or 64 lower-case hex digits, ls-remote lines are split on
`\\n` and `\\t` only and the ref compared exactly with `refs/heads/<branch>`; manifests go through
the bounded JSON decoder. A datum that fails is that site's problem (`SiteFacts.problem`) or,
for a merely unparseable manifest, a corrupt release, never an exception and never another
site's fact.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from reconciler.core import wire
from reconciler.core.facts import BranchHead, ProbeSite, ReleaseFacts, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, is_release
from reconciler.core.manifest import Manifest
from reconciler.errors import TransportError
from reconciler.remote.shell import quote
from reconciler.remote.transport import Transport

_PROBE_FUNCTIONS = r"""
export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}" LC_ALL=C
# Records: `@tag value` then a NUL byte (see remote/probe.py). A variable cannot hold a NUL in
# POSIX shells; one that can (zsh) strips them with tr.
{ nul=$(printf 'a\0b'); } 2>/dev/null
if [ "${#nul}" -eq 2 ]; then
  emit() { printf '%s %s\0' "$1" "$2"; }
else
  emit() { printf '%s ' "$1"; printf '%s' "$2" | tr -d '\000'; printf '\0'; }
fi
probe_site() {
  d="$2/deployments/$1"; link="$2/$1"
  emit @site "$1"
  if [ -L "$link" ]; then
    # One process, as before: `$(...)` drops newlines a target may end with (see remote/probe.py).
    emit @link "$(readlink "$link")"
    [ -e "$link" ] || printf '@dangling\0'
  elif [ -d "$link" ]; then printf '@path dir\0'
  elif [ -e "$link" ]; then printf '@path file\0'
  fi
  [ -d "$d" ] || return 0
  printf '@provisioned\0'
  [ -d "$d/shared" ] && printf '@shared\0'
  if [ -d "$d/.reconciler-lock" ]; then
    o=; IFS= read -r o < "$d/.reconciler-lock/owner" 2>/dev/null || :
    emit @lock "$o"
  fi
  for r in "$d"/[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]-[0-9][0-9][0-9][0-9][0-9][0-9]; do
    [ -e "$r" ] || [ -L "$r" ] || continue
    n=${r##*/}
    if [ -L "$r" ] || [ ! -d "$r" ]; then emit @notdir "$n"; continue; fi
    emit @release "$n"
    if [ -f "$r/$3" ]; then
      # The shell's own `read`: no process per release (a manifest is one line of JSON).
      m=; IFS= read -r m < "$r/$3" || :
      emit @manifest "$m"
    elif [ -e "$r/.git" ]; then
      emit @head "$(git -C "$r" rev-parse -q --verify HEAD 2>/dev/null)"
    fi
  done
}
probe_head() {
  out=$(git ls-remote -- "$1" "refs/heads/$2" 2>&1); rc=$?
  if [ "$rc" -eq 0 ]; then
    # ls-remote matches ref *suffixes* (zzz/refs/heads/main too): keep the exact ref only, so
    # no number of decoy refs can push it out of view. Split on the tab and newline only.
    out=$(printf '%s\n' "$out" | R="refs/heads/$2" awk -F '\t' '$2 == ENVIRON["R"]')
  else
    out=$(printf '%s\n' "$out" | head -c 4096)
  fi
  emit "@heads $3 $rc" "$out"
}
"""


HEADS_AT_ONCE = 8
# The probe grows with the sites on a server; an argument is capped at 128 KiB by the kernel,
# so the script travels on stdin into a temporary file and runs from there.
_RUN_FROM_STDIN = 'f=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null; rc=$?; rm -f -- "$f"; exit $rc'

END = "@end"
_VALUE_TAGS = frozenset({"@site", "@link", "@path", "@lock", "@notdir", "@release", "@manifest", "@head", "@heads"})
_BARE_TAGS = frozenset({"@dangling", "@provisioned", "@shared", END})
_NOTDIR_RE = re.compile(r"[0-9]{8}-[0-9]{6}")  # the glob's shape (ASCII digits in the C locale)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_LINK = 4096  # PATH_MAX: a longer symlink target is not one of ours


def probe_command(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> str:
    """The one shell command that gathers a server's facts. All values are quoted."""
    lines = [_PROBE_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    for index, (repository, branch) in enumerate(sorted(set(heads))):
        # stderr stays out of the records: git's own messages are captured inside probe_head.
        lines.append(
            f"probe_head {quote(repository)} {quote(branch)} {index} > \"$tmp/{index}\" 2>/dev/null &"
        )
        # At most HEADS_AT_ONCE lookups in flight: a git host's sshd drops a burst (MaxStartups).
        if index % HEADS_AT_ONCE == HEADS_AT_ONCE - 1:
            lines.append("wait")
    for site in sites:
        lines.append(f"probe_site {quote(site.domain)} {quote(site.base_path)} {quote(MANIFEST_NAME)}")
    lines += ["wait", 'cat "$tmp"/* 2>/dev/null', f"printf '{END}\\0'", "exit 0"]
    return "\n".join(lines) + "\n"


def frame(tag: str, value: str | None = None) -> str:
    """One record as the probe's shell prints it (for tests and tools that build output)."""
    return f"{tag}\0" if value is None else f"{tag} {value.replace(chr(0), '')}\0"


def _broken(why: str) -> TransportError:
    return TransportError(f"probe output cannot be trusted: {why}")


def _plain_path(target: str) -> str | None:
    """A symlink target that may name one of our releases: a plain path, no control characters."""
    if not target or len(target) > MAX_LINK or _CONTROL_RE.search(target):
        return None
    return target


def branch_head(key: tuple[str, str], rc: int, text: str) -> BranchHead:
    """What `git ls-remote <repository> refs/heads/<branch>` said, exactly: the sha of the line
    whose ref (after the only tab) is `refs/heads/<branch>`, nothing looser."""
    repository, branch = key
    if rc != 0:
        error = wire.display(text.strip())
        return BranchHead(None, error or f"git ls-remote exited {rc}")
    ref = f"refs/heads/{branch}"
    shas: set[str] = set()
    for line in text.split("\n"):
        sha, tab, name = line.partition("\t")
        if tab and name == ref and (checked := wire.as_sha(sha)) is not None:
            shas.add(checked)
    if len(shas) == 1:
        return BranchHead(shas.pop())
    if shas:
        return BranchHead(None, f"branch {wire.display(branch)!r} is listed with {len(shas)} different commits")
    return BranchHead(None, f"branch {wire.display(branch)!r} not found in {wire.display(repository)}")


class _Reader:
    """Applies the records of one probe output to ServerFacts, one record at a time."""

    def __init__(self, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> None:
        self.wanted = {site.domain: site for site in sites}
        self.head_keys = sorted(set(heads))
        self.facts = ServerFacts()
        self.site: SiteFacts | None = None
        self.release: ReleaseFacts | None = None

    def record(self, tag: str, value: str) -> None:
        if tag == "@heads":
            self.site = self.release = None
            self.heads(value)
        elif tag == "@site":
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

    def site_record(self, site: SiteFacts, tag: str, value: str) -> None:
        if tag == "@link":
            # Not a plain path: no release of ours is active (Degraded), nothing else follows.
            site.link_target, site.path_kind = _plain_path(value), "symlink"
        elif tag == "@dangling":
            site.dangling = True
        elif tag == "@path":
            if value not in ("dir", "file"):
                raise _broken(f"path kind {wire.display(value, 20)!r}")
            site.path_kind = value
        elif tag == "@provisioned":
            site.provisioned = True
        elif tag == "@shared":
            site.shared = True
        elif tag == "@lock":
            site.lock = value.strip()
        elif tag == "@notdir":
            if _NOTDIR_RE.fullmatch(value):
                site.not_dirs.append(value)
        elif tag == "@release":
            # The shell glob only matches the shape; a name must also be a real date/time.
            self.release = site.releases.setdefault(value, ReleaseFacts(value)) if is_release(value) else None
        elif tag == "@manifest" and self.release is not None:
            self.manifest(site, self.release, value)
        elif tag == "@head" and self.release is not None:
            self.release.head = wire.as_sha(value)

    @staticmethod
    def manifest(site: SiteFacts, release: ReleaseFacts, text: str) -> None:
        try:
            release.manifest, release.corrupt = Manifest.parse(text), False
        except wire.WireLimit as exc:
            # Nothing we write looks like this: someone shaped it. The site waits for a human.
            release.manifest, release.corrupt = None, True
            site.note_problem(f"malformed manifest deployments/{site.domain}/{release.name}/{MANIFEST_NAME}: {exc}")
        except wire.WireError:
            # Unparseable (cut short, emptied, edited by hand): the release is corrupt, as before.
            release.manifest, release.corrupt = None, True


def parse_probe(output: str | bytes, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> ServerFacts:
    """The facts in a probe's output. Never raises for anything a site's data holds; raises
    TransportError only when the output as a whole is not the probe's framing (cut short)."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    records = text.split("\0")
    if records[-1] != "":
        raise _broken("the output does not end with a complete record (cut short?)")
    records.pop()
    if not records or records[-1] != END:
        raise _broken("the output does not end with the probe's end record (cut short?)")
    records.pop()
    sites = list(sites)
    reader = _Reader(sites, heads)
    for number, record in enumerate(records):
        tag, space, value = record.partition(" ")
        if not (tag in _VALUE_TAGS if space else tag in _BARE_TAGS) or tag == END:
            raise _broken(f"record {number} is {wire.display(record, 60)!r}")
        reader.record(tag, value)
    for site in sites:
        reader.facts.sites.setdefault(site.domain, SiteFacts(site.domain, site.base_path))
    return reader.facts


async def gather(
    transport: Transport, sites: list[ProbeSite], heads: list[tuple[str, str]], *, timeout: float
) -> ServerFacts:
    result = await transport.run(_RUN_FROM_STDIN, stdin=probe_command(sites, heads), timeout=timeout)
    if not result.ok:
        raise TransportError(f"{transport.name}: probe failed (exit {result.exit_status}): {result.tail(5)}")
    try:
        return parse_probe(result.stdout, sites, heads)
    except TransportError as exc:
        raise TransportError(f"{transport.name}: {exc}") from exc
