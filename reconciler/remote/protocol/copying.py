"""The `copy_from_previous` step of a build: directories (vendor/, node_modules/) copied from the
live release into the new one, after its shared links and before its script, so the script has
little left to do while every release keeps dependencies of its own."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.core.layout import LOG_NAME, SitePaths, is_release, shared_link_target
from reconciler.remote.protocol.seam import Command, quote

# Fixed text: the values arrive in quoted assignments before it (`_copy_values`): the new release
# R, the live release L ("" when there is none), the shared dir S, and the positional parameters,
# two per entry (the entry, the target its shared link would have).
#
# `cp --reflink=auto -a`, never `cp -al`: hard links share the inode with the live release, and
# the tools that run next write files in place (composer rewrites vendor/composer/autoload_*.php
# with file_put_contents, i.e. O_TRUNC on the same inode; npm and `>>` append): with hard links
# the new release's `composer install` would rewrite the LIVE release's autoloader mid-deploy,
# and a rollback would find the old release's vendor/ changed. A reflink is a copy-on-write
# clone (btrfs, XFS, bcachefs: near free); elsewhere cp makes a real copy.
#
# The live release's tree came from an app repository too: no directory between a release and
# the entry may be a symlink (the new release: refused; the live one: not copied), and a symlink
# at the entry is only followed when it is our own shared link (a release built while the path
# was shared: its shared/ copy is taken, so the first build after the change is fast too).
# The log says how long each copy took (GNU date's %N; without it, no time is given).
_COPY_BODY = """P=$(cd -P -- "$R" && pwd -P)
refuse() { printf 'copy_from_previous entry %s: %s\\n' "$e" "$1" >&2; exit 1; }
note() { printf '==> copy_from_previous: %s %s\\n' "$e" "$1" >> "$R"/LOG; }
while [ $# -gt 1 ]; do
  e=$1; t=$2; shift 2
  q=; rest=$e; crooked=
  while :; do
    case $rest in */*) ;; *) break ;; esac
    q=${q:+$q/}${rest%%/*}; rest=${rest#*/}
    [ ! -L "$R/$q" ] || refuse "$q is a symlink in the release; refusing to follow it"
    [ -z "$L" ] || [ ! -L "$L/$q" ] || crooked=$q
  done
  if [ -e "$R/$e" ] || [ -L "$R/$e" ]; then note "is in the repository: kept as cloned, not copied"; continue; fi
  if [ -z "$L" ]; then note "not copied: no live release (the script builds it)"; continue; fi
  if [ -n "$crooked" ]; then note "not copied: $crooked is a symlink in the live release"; continue; fi
  src=$L/$e; from="the live release"
  if [ -L "$src" ]; then
    if [ "$(readlink -- "$src")" = "$t" ] && [ -d "$S/$e" ] && [ ! -L "$S/$e" ]; then
      src=$S/$e; from="shared/ (the live release shares it)"
    else note "not copied: a symlink in the live release"; continue; fi
  elif [ ! -d "$src" ]; then note "not copied: not a directory in the live release"; continue
  fi
  mkdir -p -- "$(dirname -- "$R/$e")"
  case $(cd -P -- "$(dirname -- "$R/$e")" && pwd -P)/ in
    "$P"/*) ;;
    *) refuse "its parent resolves outside the release" ;;
  esac
  t0=$(date +%s%N)
  cp --reflink=auto -a -- "$src" "$R/$e"
  t1=$(date +%s%N); took=
  case $t0$t1 in *[!0-9]*) ;; *) took=" in $(( (t1 - t0) / 1000000 )) ms" ;; esac
  note "copied from $from$took"
done
""".replace("/LOG", "/" + LOG_NAME)


def _copy_values(paths: SitePaths, release: str, previous: str | None, entries: Sequence[str]) -> str:
    """The quoted assignments `_COPY_BODY` reads: a live release only when it is a release name."""
    live = paths.release(previous) if previous is not None and is_release(previous) else ""
    pairs = " ".join(f"{quote(entry)} {quote(shared_link_target(entry))}" for entry in entries)
    return (f"R={quote(paths.release(release))}; L={quote(live)}; S={quote(paths.shared)}\n"
            f"set -- {pairs}\n")


def copy_previous(paths: SitePaths, release: str, previous: str | None, entries: Sequence[str]) -> Command:
    """Copy each of `entries` (`copy_from_previous`) from the live release `previous` into
    `release`, before its script: reflinks where the filesystem has them, else a real copy,
    never hard links (`_COPY_BODY` says why). An entry the new release already has (the
    repository ships it) is kept as cloned; with no live release, or where the live release has
    no real directory there, nothing is copied and the script builds it; each case is a line in
    the release's log. A symlink between the new release and an entry fails the step, with the
    entry named on stderr. `site_steps.build_release` runs the same text
    in the build command."""
    return Command("set -e\n" + copy_text(paths, release, previous, entries))


def copy_text(paths: SitePaths, release: str, previous: str | None, entries: Sequence[str]) -> str:
    """The copy as sh text, for a subshell of the build command (`site_steps.build_release`)."""
    return _copy_values(paths, release, previous, entries) + _COPY_BODY
