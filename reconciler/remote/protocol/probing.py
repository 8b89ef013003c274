"""The probe: ONE command per server that prints the facts of every site on it (the writer of
the records remote/probe.py reads, with the framing both share)."""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable
from enum import StrEnum

from reconciler.core.facts import ProbeSite
from reconciler.core.layout import SitePaths
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.seam import RUN_BUFFERED, Command, quote
from reconciler.remote.protocol.site_steps import OWNER_FILE

# --- the probe: ONE command per server that prints the facts of every site on it ---------------
#
# This is the probe's writer; remote/probe.py is its one reader and takes the framing from here
# (RECORD_END, Tag, VALUE_TAGS, BARE_TAGS, RELEASE_GLOB), so the two cannot drift. A record is
# `@tag` or `@tag value`, then RECORD_END; the last record is Tag.END. Why a NUL byte, and how a
# shell that keeps NUL bytes in variables (zsh) is handled: see remote/probe.py.

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
    END = "@end"                # the last record: the output is complete


VALUE_TAGS = frozenset({Tag.SITE, Tag.LINK, Tag.PATH, Tag.LOCK, Tag.NOTDIR, Tag.RELEASE, Tag.MANIFEST, Tag.HEAD,
                        Tag.HEADS, Tag.STALLED, Tag.UNLINKED, Tag.AT})
BARE_TAGS = frozenset(set(Tag) - VALUE_TAGS)
if any(not re.fullmatch(r"@[a-z]+", tag) for tag in Tag):  # printed in printf formats, unquoted
    raise ValueError("a probe tag must be a plain word")

# The names a release directory may have, as the probe's glob matches them (ASCII digits in the
# C locale); the reader matches `@notdir` names against the same pattern.
RELEASE_GLOB = "[0-9]" * 8 + "-" + "[0-9]" * 6
RELEASE_GLOB_RE = re.compile(fnmatch.translate(RELEASE_GLOB))

# At most this many `git ls-remote` in flight: a git host's sshd drops a burst (MaxStartups).
HEADS_AT_ONCE = 8
# One git host that does not answer must not stall its server's probe (security review 2, N3): the
# probe is one command, and a timeout of it is the server's, so every site on it would be Unknown.
# So each `git ls-remote` gets its own bound (`head_bounds`), well under the probe's, run by
# coreutils/BusyBox `timeout` (SIGKILL GIT_KILL_AFTER seconds after SIGTERM): a ref whose host did
# not answer is that ref's error (Tag.STALLED). And all of them get a budget, half the probe's
# time: a batch of HEADS_AT_ONCE that cannot have its full bound any more is not started (its
# refs are "not asked"), so however many hosts do not answer, the sites' part of the probe runs.
# Without `timeout` on the server, ls-remote runs unbounded but for ssh's and curl's own bounds
# (GIT_PREAMBLE).
GIT_KILL_AFTER = 2
DEFAULT_GIT_TIMEOUT = 20  # at most: a quarter of the probe's timeout (command_timeout) when that is less
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
# Records: `@tag value` then a NUL byte (see remote/probe.py). A variable cannot hold a NUL in
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
    # GNU find reads every site's link in one process after this (`links`, issue 15: a readlink
    # per site was most of a probe's time); elsewhere one process per link, as before. `$(...)`
    # drops newlines a target may end with (see remote/probe.py).
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
# The targets of the given site links, `@at <path>` then `@link <target>` each: one process for
# them all. Only symlinks are listed; a path that vanished meanwhile is left out (probe_site saw
# it; remote/probe.py treats a site link without its @link as gone).
links() {{ find "$@" -maxdepth 0 -type l -printf '{Tag.AT} %p{_END_PRINTF}{Tag.LINK} %l{_END_PRINTF}' 2>/dev/null; }}
probe_head() {{
  # $2 is a full ref (refs/heads/B or refs/tags/T). An annotated tag is an object of its own;
  # ls-remote names the commit it points at on a second line, `<ref>^{{}}`, listed only when
  # asked for by name (remote/probe.py prefers it). $4: the seconds it may take (0: not asked).
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


def head_order(heads: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (repository, full ref) heads a probe resolves, each once: `@heads <i> ...` is the i-th."""
    return sorted(set(heads))


def head_bounds(timeout: float, git_timeout: float | None = None) -> tuple[int, int]:
    """(seconds one `git ls-remote` may take, seconds all of them may take) in a probe that may
    take `timeout`: `git_timeout`, by default a quarter of `timeout` and at most
    DEFAULT_GIT_TIMEOUT, within a budget of half of `timeout` (whole seconds, at least 1)."""
    budget = max(1, math.floor(timeout / 2))
    each = git_timeout if git_timeout is not None else min(DEFAULT_GIT_TIMEOUT, timeout / 4)
    return min(budget, max(1, math.ceil(each))), budget


# How `probe_head` bounds a command: `timeout` with a kill-after where it takes one, else plain.
FIND_TIMEOUT = (
    "gto=\n"
    "if command -v timeout >/dev/null 2>&1; then\n"
    f"  if timeout -k 1 9 true 2>/dev/null; then gto='timeout -k {GIT_KILL_AFTER}'\n"
    "  elif timeout 9 true 2>/dev/null; then gto=timeout; fi\n"
    "fi\n"
)


def probe_script(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]],
                  bounds: tuple[int, int] = (DEFAULT_GIT_TIMEOUT, 2 * DEFAULT_GIT_TIMEOUT)) -> str:
    """The probe's script up to its end record, without an exit (the lock embeds it). All
    values are quoted. `bounds`: `head_bounds`."""
    lines = [_PROBE_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    each, budget = (int(b) for b in bounds)
    ordered = head_order(heads)
    if ordered:
        lines += [FIND_TIMEOUT, f"gt={each}; gend=$(($(date +%s) + {budget}))"]
    for index, (repository, ref) in enumerate(ordered):
        if index and index % HEADS_AT_ONCE == 0:
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
    return Command(RUN_BUFFERED, probe_script(sites, heads, head_bounds(timeout, git_timeout)) + "exit 0\n")
