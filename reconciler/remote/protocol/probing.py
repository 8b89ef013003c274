"""The probe: ONE remote command per server that gathers the facts of every site on it.

Both sides of the wire are here: `probe` builds the command (its script travels on stdin) and
`parse_probe` is the strict reader of what it prints, sharing the framing (RECORD_END, Tag).
remote/probe.py sends it (`gather`); the git heads' bounds and answers are protocol/heads.py.

The probe reports, per site, the site path (symlink target, or a directory/file that is in the
way), the release directories with their manifests, the shared dir and the lock, and resolves
every (repository, ref) head (a branch's head, or the commit a tag names) with `git ls-remote`
run in parallel on the server, which reaches the repositories exactly as deploys will. Cost
grows with servers, not with sites. Each ls-remote has its own time bound, well within the probe's (heads.head_bounds):
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

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable
from enum import StrEnum

from reconciler.core import wire
from reconciler.core.facts import BranchHead, ProbeSite, ReleaseFacts, ServerFacts, SiteFacts
from reconciler.core.layout import MANIFEST_NAME, SitePaths, is_release
from reconciler.core.manifest import Manifest
from reconciler.core.site_env import parse_digest
from reconciler.errors import TransportError
from reconciler.remote.protocol import heads as git_heads
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.seam import RUN_BUFFERED, Command, quote
from reconciler.remote.protocol.site_steps import OWNER_FILE

# --- the writer ---------------------------------------------------------------------------------
#
# The writer (`probe`) and the reader (`parse_probe`, below) share the framing (RECORD_END, Tag,
# VALUE_TAGS, BARE_TAGS, RELEASE_GLOB), so the two cannot drift. Why a NUL byte: the docstring.

RECORD_END = "\0"


class Tag(StrEnum):
    """The probe's record tags."""

    SITE = "@site"              # value: the domain; the records up to the next @site are its own
    LINK = "@link"              # value: the site symlink's target
    DANGLING = "@dangling"      # the symlink resolves to nothing
    PATH = "@path"              # value: "dir" or "file", a real directory or file where the link goes
    PROVISIONED = "@provisioned"  # deployments/{domain}/ exists
    SHARED = "@shared"          # deployments/{domain}/shared/ exists
    LOCK = "@lock"              # value: the first line of the lock's owner file
    NOTDIR = "@notdir"          # value: a release-shaped name that is no directory (a file, a symlink)
    RELEASE = "@release"        # value: a release directory's name; its records follow
    MANIFEST = "@manifest"      # value: the first line of that release's manifest
    HEAD = "@head"              # value: that release's git HEAD (no manifest)
    HEADS = "@heads"            # value: `<index> <exit status> <ls-remote output>` of one ref (branch or tag)
    STALLED = "@stalled"        # value: `<index> <seconds>`: that ref's git host did not answer within
    #                             <seconds>; 0: not asked, the probe's time for git hosts was spent
    UNLINKED = "@unlinked"      # value: a shared entry that is no symlink in the live release (drift)
    AT = "@at"                  # value: a site link's path; its @link follows (the batched link reads)
    ENV = "@env"                # value: sha256 of shared/.env, or "-" (no such file); only for sites with an env file
    END = "@end"                # the last record: the output is complete


VALUE_TAGS = frozenset({Tag.SITE, Tag.LINK, Tag.PATH, Tag.LOCK, Tag.NOTDIR, Tag.RELEASE, Tag.MANIFEST, Tag.HEAD,
                        Tag.HEADS, Tag.STALLED, Tag.UNLINKED, Tag.AT, Tag.ENV})
BARE_TAGS = frozenset(set(Tag) - VALUE_TAGS)
if any(not re.fullmatch(r"@[a-z]+", tag) for tag in Tag):  # printed in printf formats, unquoted
    raise ValueError("a probe tag must be a plain word")

# The names a release directory may have, as the probe's glob matches them (ASCII digits in the
# C locale); the reader matches `@notdir` names against the same pattern.
RELEASE_GLOB = "[0-9]" * 8 + "-" + "[0-9]" * 6
RELEASE_GLOB_RE = re.compile(fnmatch.translate(RELEASE_GLOB))

LINKS_AT_ONCE = 500  # site links per `find` (argv stays far below ARG_MAX)

# RECORD_END as printf (`\0`) and tr (`\000`) write it.
_END_PRINTF = f"\\{ord(RECORD_END):o}"
_END_TR = f"\\{ord(RECORD_END):03o}"

# The probe's shell functions take the domain ($1) and the base path ($2) as arguments. Their
# paths are SitePaths' own, built from these placeholders: each becomes its variable, every
# other component is quoted.
_DOMAIN_ARG, _BASE_ARG = "\0domain", "\0base"
_ARGS = {_DOMAIN_ARG: '"$1"', _BASE_ARG: '"$2"'}
_TEMPLATE = SitePaths(_BASE_ARG, _DOMAIN_ARG)


def _sh_path(path: str) -> str:
    return "/".join(_ARGS.get(part) or quote(part) for part in path.split("/"))


def _under(path: str, parent: str) -> str:
    """`path` relative to `parent`, quoted: a name the layout puts inside `parent`."""
    if not path.startswith(parent + "/"):
        raise ValueError(f"{path!r} is not inside {parent!r}")
    return "/".join(quote(part) for part in path[len(parent) + 1:].split("/"))


_LOCK_DIR = _under(_TEMPLATE.lock, _TEMPLATE.deployments)
_MANIFEST = _under(_TEMPLATE.manifest(RELEASE_GLOB), _TEMPLATE.release(RELEASE_GLOB))

_PROBE_FUNCTIONS = GIT_PREAMBLE + "export LC_ALL=C\n" + rf"""
# Records: `@tag value` then a NUL byte (see parse_probe). A variable cannot hold a NUL in
# POSIX shells; one that can (zsh) strips them with tr.
{{ nul=$(printf 'a{_END_PRINTF}b'); }} 2>/dev/null
if [ "${{#nul}}" -eq 2 ]; then
  emit() {{ printf '%s %s{_END_PRINTF}' "$1" "$2"; }}
else
  emit() {{ printf '%s ' "$1"; printf '%s' "$2" | tr -d '{_END_TR}'; printf '{_END_PRINTF}'; }}
fi
probe_site() {{
  d={_sh_path(_TEMPLATE.deployments)}; link={_sh_path(_TEMPLATE.site_link)}
  emit {Tag.SITE} "$1"
  if [ -L "$link" ]; then
    # GNU find reads every site's link in one process after this (`links`: a readlink
    # per site was most of a probe's time); elsewhere one process per link, as before. `$(...)`
    # drops newlines a target may end with (see parse_probe).
    [ -n "$batch" ] || emit {Tag.LINK} "$(readlink "$link")"
    [ -e "$link" ] || printf '{Tag.DANGLING}{_END_PRINTF}'
  elif [ -d "$link" ]; then printf '{Tag.PATH} dir{_END_PRINTF}'
  elif [ -e "$link" ]; then printf '{Tag.PATH} file{_END_PRINTF}'
  fi
  # The live release's shared links are desired state too: one that is gone or was replaced is
  # drift. `test` is a builtin: no process per entry.
  shift 2  # $d and $link hold the site now; what follows are its shared entries
  if [ -L "$link" ] && [ -e "$link" ]; then
    for e in "$@"; do [ -L "$link/$e" ] || emit {Tag.UNLINKED} "$e"; done
  fi
  [ -d "$d" ] || return 0
  printf '{Tag.PROVISIONED}{_END_PRINTF}'
  [ -d "$d"/{_under(_TEMPLATE.shared, _TEMPLATE.deployments)} ] && printf '{Tag.SHARED}{_END_PRINTF}'
  if [ -d "$d"/{_LOCK_DIR} ]; then
    o=; IFS= read -r o < "$d"/{_LOCK_DIR}/{quote(OWNER_FILE)} 2>/dev/null || :
    emit {Tag.LOCK} "$o"
  fi
  for r in "$d"/{RELEASE_GLOB}; do
    [ -e "$r" ] || [ -L "$r" ] || continue
    n=${{r##*/}}
    if [ -L "$r" ] || [ ! -d "$r" ]; then emit {Tag.NOTDIR} "$n"; continue; fi
    emit {Tag.RELEASE} "$n"
    if [ -f "$r"/{_MANIFEST} ]; then
      # The shell's own `read`: no process per release (a manifest is one line of JSON).
      m=; IFS= read -r m < "$r"/{_MANIFEST} || :
      emit {Tag.MANIFEST} "$m"
    elif [ -e "$r/.git" ]; then
      emit {Tag.HEAD} "$(git -C "$r" rev-parse -q --verify HEAD 2>/dev/null)"
    fi
  done
}}
# A site with an env file (ProbeSite.env): the digest of its shared/.env, "-" when there is
# none or it cannot be read (either way it is written again). One process, for such sites only.
probe_env() {{
  f={_sh_path(_TEMPLATE.shared + "/.env")}; s=
  [ -f "$f" ] && s=$(sha256sum < "$f" 2>/dev/null) && s=${{s%% *}}
  emit {Tag.ENV} "${{s:--}}"
}}
# The targets of the given site links, `@at <path>` then `@link <target>` each: one process for
# them all. Only symlinks are listed; a path that vanished meanwhile is left out (probe_site saw
# it; parse_probe treats a site link without its @link as gone).
links() {{ find "$@" -maxdepth 0 -type l -printf '{Tag.AT} %p{_END_PRINTF}{Tag.LINK} %l{_END_PRINTF}' 2>/dev/null; }}
probe_head() {{
  # $2 is a full ref (refs/heads/B or refs/tags/T). An annotated tag is an object of its own;
  # ls-remote names the commit it points at on a second line, `<ref>^{{}}`, listed only when
  # asked for by name (parse_probe prefers it). $4: the seconds it may take (0: not asked).
  if [ "$4" -eq 0 ]; then emit "{Tag.STALLED} $3" 0; return; fi
  if [ -n "$gto" ]; then out=$($gto "$4" git ls-remote -- "$1" "$2" "$2^{{}}" 2>&1); rc=$?
  else out=$(git ls-remote -- "$1" "$2" "$2^{{}}" 2>&1); rc=$?; fi
  # `timeout`: 124 (GNU), or the signal's status (BusyBox; GNU when it took SIGKILL). git's own
  # failures exit 128.
  case $gto:$rc in ?*:124|?*:137|?*:143) emit "{Tag.STALLED} $3" "$4"; return ;; esac
  if [ "$rc" -eq 0 ]; then
    # ls-remote matches ref *suffixes* (zzz/refs/heads/main too): keep the exact ref (and its
    # peeled line) only, so no number of decoy refs can push it out of view. Split on the tab
    # and newline only.
    out=$(printf '%s\n' "$out" | R="$2" awk -F '\t' '$2 == ENVIRON["R"] || $2 == ENVIRON["R"] "^{{}}"')
  else
    out=$(printf '%s\n' "$out" | head -c 4096)
  fi
  emit "{Tag.HEADS} $3 $rc" "$out"
}}
"""


def probe_script(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]],
                  bounds: tuple[int, int] = (git_heads.DEFAULT_GIT_TIMEOUT, 2 * git_heads.DEFAULT_GIT_TIMEOUT)) -> str:
    """The probe's script up to its end record, without an exit (the lock embeds it). All
    values are quoted. `bounds`: `head_bounds`."""
    lines = [_PROBE_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    each, budget = (int(b) for b in bounds)
    ordered = git_heads.head_order(heads)
    if ordered:
        lines += [git_heads.FIND_TIMEOUT, f"gt={each}; gend=$(($(date +%s) + {budget}))"]
    for index, (repository, ref) in enumerate(ordered):
        if index and index % git_heads.HEADS_AT_ONCE == 0:
            # The next batch only with its full bound left in the budget; else it is not asked.
            lines += ["wait", f"[ $((gend - $(date +%s))) -ge {each} ] || gt=0"]
        # stderr stays out of the records: git's own messages are captured inside probe_head.
        lines.append(f"probe_head {quote(repository)} {quote(ref)} {index} \"$gt\" > \"$tmp/{index}\" 2>/dev/null &")
    # GNU find prints link targets (-printf %l); without it (BusyBox), readlink per site.
    lines.append("batch=; find / -maxdepth 0 -printf '' >/dev/null 2>&1 && batch=1")
    sites = list(sites)
    for site in sites:
        entries = "".join(f" {quote(entry)}" for entry in site.shared)
        lines.append(f"probe_site {quote(site.domain)} {quote(site.base_path)}{entries}")
        if site.env:
            lines.append(f"probe_env {quote(site.domain)} {quote(site.base_path)}")
    for start in range(0, len(sites), LINKS_AT_ONCE):
        chunk = " ".join(quote(SitePaths(s.base_path, s.domain).site_link) for s in sites[start:start + LINKS_AT_ONCE])
        lines.append(f'[ -z "$batch" ] || links {chunk}')
    lines += ["wait", 'cat "$tmp"/* 2>/dev/null', f"printf '{Tag.END}{_END_PRINTF}'"]
    return "\n".join(lines) + "\n"


def probe(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]], timeout: float = 120.0,
          git_timeout: float | None = None) -> Command:
    """The one command that gathers a server's facts: `sites` and the (repository, ref) `heads`
    (`refs/heads/<branch>` or `refs/tags/<tag>`), resolved with `git ls-remote` in parallel,
    each within `head_bounds(timeout, git_timeout)`; `timeout` is the probe's own.
    stdin: the script (any length)."""
    return Command(RUN_BUFFERED, probe_script(sites, heads, git_heads.head_bounds(timeout, git_timeout)) + "exit 0\n")


# --- the reader ---------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_LINK = 4096  # PATH_MAX: a longer symlink target is not one of ours


def frame(tag: str, value: str | None = None) -> str:
    """One record as the probe's shell prints it (for tests and tools that build output)."""
    return f"{tag}{RECORD_END}" if value is None else f"{tag} {value.replace(RECORD_END, '')}{RECORD_END}"


def _broken(why: str) -> TransportError:
    return TransportError(f"probe output cannot be trusted: {why}")


def framed_records(output: str | bytes, end: str, broken: Callable[[str], TransportError]) -> list[str]:
    """The records of a NUL-framed answer (the probe's, the import's), without its end record;
    `broken(why)` is raised when the answer as a whole is not framed so (cut short)."""
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    records = text.split(RECORD_END)
    if records[-1] != "":
        raise broken("the output does not end with a complete record (cut short?)")
    records.pop()
    if not records or records[-1] != end:
        raise broken("the output does not end with its end record (cut short?)")
    records.pop()
    return records


def _plain_path(target: str) -> str | None:
    """A symlink target that may name one of our releases: a plain path, no control characters."""
    if not target or len(target) > MAX_LINK or _CONTROL_RE.search(target):
        return None
    return target


class _Reader:
    """Applies the records of one probe output to ServerFacts, one record at a time."""

    def __init__(self, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> None:
        self.wanted = {site.domain: site for site in sites}
        self.by_link = {SitePaths(site.base_path, site.domain).site_link: site.domain for site in self.wanted.values()}
        self.head_keys = git_heads.head_order(heads)
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
        self.facts.heads[key] = git_heads.branch_head(key, rc, text)

    def stalled(self, value: str) -> None:
        """`<index> <seconds>`: that head's git host did not answer in time (0: not asked)."""
        index_text, _, seconds_text = value.partition(" ")
        index = wire.parse_uint(index_text, len(self.head_keys) - 1) if self.head_keys else None
        seconds = wire.parse_uint(seconds_text, git_heads.MAX_GIT_SECONDS)
        if index is None or seconds is None:
            raise _broken(f"a stalled head record names head {wire.display(index_text, 20)!r}, "
                          f"seconds {wire.display(seconds_text, 20)!r}")
        # 0: not asked (other hosts used up the time), which is no outage of this one.
        head = BranchHead(None, git_heads.unanswered(seconds), unreachable=seconds > 0)
        self.facts.heads[self.head_keys[index]] = head

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
        elif tag == Tag.ENV:
            try:
                site.env_digest = parse_digest(value)
            except ValueError:
                site.note_problem(f"the probe reports {wire.display(value, 80)!r} as the digest of shared/.env")
        elif tag == Tag.NOTDIR:
            if RELEASE_GLOB_RE.fullmatch(value):
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
    and every poll reads them all again (parsing each one every pass was per-site CPU).
    Manifests are frozen, so one parsed value can serve every pass; a text that does not parse
    raises each time (not cached)."""
    return Manifest.parse(text)


def parse_probe(output: str | bytes, sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]]) -> ServerFacts:
    """The facts in a probe's output. Never raises for anything a site's data holds; raises
    TransportError only when the output as a whole is not the probe's framing (cut short)."""
    records = framed_records(output, Tag.END, _broken)
    sites = list(sites)
    reader = _Reader(sites, heads)
    for number, record in enumerate(records):
        tag, space, value = record.partition(" ")
        if not (tag in VALUE_TAGS if space else tag in BARE_TAGS) or tag == Tag.END:
            raise _broken(f"record {number} is {wire.display(record, 60)!r}")
        reader.record(tag, value)
    for site in sites:
        reader.facts.sites.setdefault(site.domain, SiteFacts(site.domain, site.base_path))
    return reader.facts
