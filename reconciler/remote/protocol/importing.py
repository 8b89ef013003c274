"""`reconciler import`: ONE remote command per server that lists the BrokeForge-layout sites
under a base path, and the one strict reader of what it prints.

What the command reports, per directory `deployments/<name>/` (symlinks and dot names skipped):
the site link `<base>/<name>` (its target, or that it is missing, dangling or no symlink), the
number of release-named directories, and from the live release's git work tree (reached through
the link): the `origin` URL, the branch HEAD is on (empty when detached), a tag HEAD is exactly
at, the HEAD commit, and the top-level entries that are symlinks into the site's `shared/` (what
the release really shares). Git runs with `-C` the live release, and only when that release has
its own `.git` (else git would walk up and answer for a repository around the base path).

Framing as the probe's (protocol/probing.py, whose docstring says why): every record is `@tag`
or `@tag value` ended by a NUL byte, each value printed from a shell variable (which cannot hold
a NUL, or is passed through `tr -d` where it can: zsh), so no value can end its record or forge
another; the last record is `@end`. Every value is bounded on the server (`head -c`) and again
here. The reader is total: a value that is not what it must be (a domain that is no DNS name, a
link that names no release, a branch git would refuse, a URL with control characters) makes
that SITE unreadable with the reason; only output that is not this framing as a whole (cut short,
an unknown tag, a field before any site, a malformed count) raises TransportError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from reconciler.core import wire
from reconciler.core.layout import SitePaths
from reconciler.core.site_values import check_branch, check_domain
from reconciler.errors import TransportError
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.probing import RELEASE_GLOB, framed_records
from reconciler.remote.protocol.seam import RUN_BUFFERED, Command, quote

RECORD_END = "\0"
MAX_SITES = 5000    # directories under deployments/ read per command; more are reported as @more
MAX_VALUE = 1024    # bytes of one git answer (a URL, a branch, a tag) kept on the server
MAX_LINK = 4096     # PATH_MAX: a symlink target
MAX_LINKED = 64     # shared links reported per site
MAX_RELEASES = 10**6


class Tag(StrEnum):
    SITE = "@site"          # value: the name of a directory under deployments/; its records follow
    LINK = "@link"          # value: the site symlink's target
    NOLINK = "@nolink"      # no site link at <base>/<name>
    NOTLINK = "@notlink"    # <base>/<name> is a real directory or file, not a symlink
    DANGLING = "@dangling"  # the site link resolves to nothing
    RELEASES = "@releases"  # value: how many release-named directories deployments/<name>/ holds
    NOGIT = "@nogit"        # the live release has no .git of its own
    ORIGIN = "@origin"      # value: `git remote get-url origin` (empty: no origin)
    BRANCH = "@branch"      # value: the branch HEAD is on (empty: detached)
    TAG = "@tag"            # value: a tag HEAD is exactly at (empty: none)
    COMMIT = "@commit"      # value: HEAD's commit (empty: no commit)
    SHARED = "@shared"      # value: a top-level entry of the live release that links into shared/
    MORE = "@more"          # more than MAX_SITES directories: the rest were not read
    NOBASE = "@nobase"      # <base>/deployments is not a directory
    END = "@end"


VALUE_TAGS = frozenset({Tag.SITE, Tag.LINK, Tag.RELEASES, Tag.ORIGIN, Tag.BRANCH, Tag.TAG, Tag.COMMIT, Tag.SHARED})
BARE_TAGS = frozenset(set(Tag) - VALUE_TAGS)
_FIELDS = {Tag.LINK: "link", Tag.ORIGIN: "origin", Tag.BRANCH: "branch", Tag.TAG: "tag", Tag.COMMIT: "commit"}
_END_PRINTF = f"\\{ord(RECORD_END):o}"
_END_TR = f"\\{ord(RECORD_END):03o}"

_SCRIPT = GIT_PREAMBLE + "export LC_ALL=C\n" + rf"""
{{ nul=$(printf 'a{_END_PRINTF}b'); }} 2>/dev/null
if [ "${{#nul}}" -eq 2 ]; then
  emit() {{ printf '%s %s{_END_PRINTF}' "$1" "$2"; }}
else
  emit() {{ printf '%s ' "$1"; printf '%s' "$2" | tr -d '{_END_TR}'; printf '{_END_PRINTF}'; }}
fi
bare() {{ printf '%s{_END_PRINTF}' "$1"; }}
g() {{ git -C "$l" "$@" 2>/dev/null | head -c {MAX_VALUE}; }}
import_site() {{
  d=$1; s=${{d##*/}}; l=$b/$s
  emit {Tag.SITE} "$s"
  if [ -L "$l" ]; then
    emit {Tag.LINK} "$(readlink "$l" | head -c {MAX_LINK})"
    [ -e "$l" ] || {{ bare {Tag.DANGLING}; return; }}
  elif [ -e "$l" ]; then bare {Tag.NOTLINK}; return
  else bare {Tag.NOLINK}; return
  fi
  c=0
  for r in "$d"/{RELEASE_GLOB}; do [ -d "$r" ] && [ ! -L "$r" ] && c=$((c + 1)); done
  emit {Tag.RELEASES} "$c"
  [ -e "$l/.git" ] || {{ bare {Tag.NOGIT}; return; }}
  emit {Tag.ORIGIN} "$(g remote get-url origin)"
  h=$(g symbolic-ref -q --short HEAD)
  emit {Tag.BRANCH} "$h"
  # A tag is only asked for a detached HEAD (a branch is what the declaration follows then).
  [ -n "$h" ] || emit {Tag.TAG} "$(g describe --tags --exact-match HEAD)"
  emit {Tag.COMMIT} "$(g rev-parse -q --verify HEAD)"
  k=0
  for e in "$l"/* "$l"/.[!.]* "$l"/..?*; do
    [ -L "$e" ] || continue
    n=${{e##*/}}
    case $(readlink "$e") in
      */shared/"$n"|shared/"$n") k=$((k + 1)); [ "$k" -le {MAX_LINKED} ] && emit {Tag.SHARED} "$n" ;;
    esac
  done
}}
"""


def import_command(base_path: str) -> Command:
    """The one command that surveys `base_path` (a validated declaration base_path). stdin: the script."""
    lines = [_SCRIPT, f"b={quote(base_path)}",
             "if [ -d \"$b\"/deployments ]; then", "  i=0",
             "  for d in \"$b\"/deployments/*; do",
             "    [ -d \"$d\" ] && [ ! -L \"$d\" ] || continue",
             f"    i=$((i + 1)); [ \"$i\" -le {MAX_SITES} ] || {{ bare {Tag.MORE}; break; }}",
             "    import_site \"$d\"",
             "  done",
             f"else bare {Tag.NOBASE}; fi",
             f"bare {Tag.END}", "exit 0"]
    return Command(RUN_BUFFERED, "\n".join(lines) + "\n")


# --- the reader ---------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SHARED_RE = re.compile(r"[^/\x00-\x1f\x7f]{1,255}")


@dataclass
class FoundSite:
    """One directory under deployments/, as the server answered for it. `problem` set: it cannot
    be imported, and says why; else `release`, `origin` and `commit` are set and checked."""

    name: str
    link: str | None = None
    release: str | None = None
    releases: int = 0
    origin: str | None = None
    branch: str | None = None
    tag: str | None = None
    commit: str | None = None
    shared: list[str] = field(default_factory=list)
    problem: str | None = None
    _seen: set[str] = field(default_factory=set, repr=False)

    def fail(self, why: str) -> None:
        if self.problem is None:
            self.problem = why


@dataclass
class Survey:
    """What one server holds under a base path."""

    sites: list[FoundSite] = field(default_factory=list)
    more: bool = False          # more directories than MAX_SITES: the rest were not read
    no_layout: bool = False     # <base>/deployments is no directory


def frame(tag: str, value: str | None = None) -> str:
    """One record as the command prints it (for tests and tools that build output)."""
    return f"{tag}{RECORD_END}" if value is None else f"{tag} {value.replace(RECORD_END, '')}{RECORD_END}"


def _broken(why: str) -> TransportError:
    return TransportError(f"import output cannot be trusted: {why}")


def _text(value: str, limit: int) -> str | None:
    """A value we keep: bounded, no control characters (a URL, a branch, a tag, a link)."""
    return value if 0 < len(value) <= limit and not _CONTROL_RE.search(value) else None


def _record(site: FoundSite, tag: str, value: str, base_path: str) -> None:
    if tag in _FIELDS or tag == Tag.RELEASES:
        if tag in site._seen:
            raise _broken(f"{tag} twice for one site")
        site._seen.add(tag)
    if tag == Tag.RELEASES:
        count = wire.parse_uint(value, MAX_RELEASES)
        if count is None:
            raise _broken(f"release count {wire.display(value, 20)!r}")
        site.releases = count
    elif tag == Tag.LINK:
        site.link = _text(value, MAX_LINK)
        site.release = SitePaths(base_path, site.name).release_from_target(site.link) if site.link else None
        if site.release is None:
            site.fail(f"the site link points at {wire.display(value, 120)!r}, not a release under "
                      f"deployments/{site.name}/")
    elif tag in (Tag.NOLINK, Tag.NOTLINK, Tag.DANGLING, Tag.NOGIT):
        site.fail({Tag.NOLINK: f"no site link {base_path}/{site.name}",
                   Tag.NOTLINK: f"{base_path}/{site.name} is a real directory or file, not a symlink",
                   Tag.DANGLING: f"the site link {base_path}/{site.name} is dangling (its release is gone)",
                   Tag.NOGIT: f"the live release {site.release} is not a git work tree"}[Tag(tag)])
    elif tag == Tag.ORIGIN:
        site.origin = _text(value, MAX_VALUE)
        if site.origin is None:
            site.fail("the live release's git work tree has no usable remote 'origin'" if not value
                      else "the live release's origin URL is too long or holds control characters")
    elif tag == Tag.BRANCH:
        site.branch = value if value and check_branch(value) is None and len(value) <= MAX_VALUE else None
        if value and site.branch is None:
            site.fail(f"the live release is on branch {wire.display(value, 80)!r}, not a valid branch name")
    elif tag == Tag.TAG:
        # Only a nice touch for a detached HEAD: a tag we cannot declare is just not used.
        site.tag = value if value and check_branch(value, "tag") is None and len(value) <= MAX_VALUE else None
    elif tag == Tag.COMMIT:
        site.commit = wire.as_sha(value)
        if site.commit is None:
            site.fail("the live release's HEAD is no commit")
    elif tag == Tag.SHARED:
        if not _SHARED_RE.fullmatch(value) or value in (".", ".."):
            site.fail(f"the live release links {wire.display(value, 80)!r} into shared/: not a name a "
                      "declaration's `shared` can hold")
        elif value not in site.shared:
            site.shared.append(value)


def _complete(site: FoundSite) -> None:
    """A site without a problem must have told everything an import needs."""
    if (why := check_domain(site.name)) is not None:
        site.problem = f"the directory name is not a domain: {why}"  # first: nothing else is about a site
    missing = [what for what, value in (("site link", site.link), ("origin", site.origin),
                                        ("commit", site.commit)) if value is None]
    if site.problem is None and missing:
        site.problem = "the server did not say its " + ", ".join(missing)


def parse_import(output: str | bytes, base_path: str) -> Survey:
    """The survey in an import command's output. Never raises for what a site's data holds;
    raises TransportError when the output as a whole is not the command's framing."""
    records = framed_records(output, Tag.END, _broken)
    survey = Survey()
    site: FoundSite | None = None
    for number, record in enumerate(records):
        tag, space, value = record.partition(" ")
        if not (tag in VALUE_TAGS if space else tag in BARE_TAGS) or tag == Tag.END:
            raise _broken(f"record {number} is {wire.display(record, 60)!r}")
        if tag == Tag.SITE:
            site = FoundSite(value if len(value) <= 255 else value[:255])
            survey.sites.append(site)
        elif tag == Tag.MORE:
            survey.more = True
        elif tag == Tag.NOBASE:
            survey.no_layout = True
        elif site is None:
            raise _broken(f"record {number} ({tag}) comes before any site")
        else:
            _record(site, tag, value, base_path)
    for found in survey.sites:
        _complete(found)
    return survey
