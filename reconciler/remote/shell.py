"""The shell seam: the one place that turns values into POSIX sh text.

Every remote command the reconciler sends is built here: quoting, the non-interactive git
preamble, how a command is started (`/bin/sh -c`, locally and over SSH), the exit codes that
scripts and Python agree on, one builder per step of changing a site, the probe (the writer of
the records remote/probe.py reads, with the framing both share) and the lock's commands. Nothing
else in the package assembles shell text (tests/test_shell_seam.py enforces it on every module).

Two rules keep values data:

* Every non-code value inside a command goes through `quote` (and after `--` for programs
  that take options).
* Long values never travel in argv. A command line is one argument of `/bin/sh -c`, which
  Linux caps at 128 KiB (MAX_ARG_STRLEN), and quoting grows a `'` to five characters (over
  SSH, where the command is quoted once more, to seventeen). So the deploy script, the
  reload command, manifests, log notes and the shared list travel on the command's *stdin*
  (`Command.stdin`), raw and unquoted, to a small fixed command. Only paths, the repository
  URL, the branch or tag and the commit are quoted into argv; each is bounded by what a file system
  or git can use at all.

Code by design (`script`, `reload`) is written from stdin to a file in the release directory
and run from there with stdin = /dev/null: the code can never read its own source or anything
else of ours on stdin (`sh -s` would let its first `cat` swallow the rest of the script).
The deploy script is staged that way by the (untied) claim step, so the long-running script
step itself needs no stdin: over SSH a tied step has a terminal, and a terminal mangles stdin
(see `stage_stdin`).

A command that cannot even start (the kernel refuses an over-long argument with E2BIG) is
reported by the transports as `EXIT_CANNOT_RUN`, a failure of that step, never as an
unreachable server: retrying cannot make it shorter.
"""

from __future__ import annotations

import base64
import fnmatch
import math
import re
import secrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.facts import ProbeSite
from reconciler.core.health import HealthCheck
from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths, is_release, shared_link_target
from reconciler.remote.mirror import mirror_path

SH = "/bin/sh"

# Exit codes shared by the commands below and the Python that reads them.
EXIT_NOT_A_SYMLINK = 3   # switch: the site path is a real directory or file; never replaced
EXIT_RELEASE_MISSING = 4  # switch: the release to activate is not on the server
EXIT_LOCK_KEPT = 5        # lock release: the lock is ours but could not be removed
EXIT_SHARED = 7           # build: the release was cloned, but linking a shared entry failed
EXIT_RECORD = 8           # finish: the release's manifest could not be written; nothing switched
EXIT_CLAIM = 9            # build: the release directory could not be claimed (`claim_release`)
EXIT_CANNOT_RUN = 126    # the command never started (E2BIG: too long for one argument); as sh reports it

# Linux's limit on ONE argument (MAX_ARG_STRLEN, 32 pages of 4 KiB, counting the final NUL).
# A command longer than this cannot be started by `sh -c` here, nor by sshd's `$SHELL -c` there.
MAX_ARG_BYTES = 128 * 1024

# Git must never stop to ask a question: no terminal prompt, no interactive ssh. Nor wait for ever
# on a git host that does not answer (security review 2, N3): ssh gives up on a connection, the
# handshake included, after GIT_CONNECT_SECONDS, and on one that stopped answering its keepalives
# after GIT_STALL_SECONDS; git's HTTP (curl) aborts a transfer that moved less than 1 byte/s for
# GIT_STALL_SECONDS (a git host sends keepalives every 5 s while it prepares a pack, so only a
# dead one is cut). Git 2.39 has no connect timeout for HTTP, and curl's low-speed limit does not
# cover connecting: a SYN that is never answered fails after the kernel's retries (~2 min on
# Linux). A deploy's fetch and clone are bounded by these and deploy_timeout; the probe's
# `git ls-remote` has its own, shorter bound on top (`probe_head`). The server's own
# GIT_HTTP_LOW_SPEED_* and `-o` options given in its GIT_SSH_COMMAND win.
#
# And it reaches a git host over one SSH connection, not one per git command (issue 15): an SSH
# login costs a key exchange and the host's session setup (~0.2 s to 127.0.0.1 here, a WAN round
# trip or more elsewhere), and a pass's probe (`ls-remote`) is followed by a deploy's fetch. So an
# OpenSSH `GIT_SSH_COMMAND` (ours, or the server's own when it is a plain `ssh ...` line; a
# wrapper program is left alone) gets ControlMaster=auto with a socket under ~/.ssh/reconciler-mux
# that persists 300 s, so the next poll reuses it too. Options given earlier win in OpenSSH, so a
# server's own `-o ControlMaster=no` opts out. Run twice in one command (an unpin's lock command
# checks the head, then probes), it adds them once (`reconciler_git`).
#
# One connection carries one set of credentials, so the socket is named after everything that
# decides how ssh connects (security review 2, N4): the SHA-256 of `ssh -G` for this very call
# (git's ssh command without our options, and git's arguments but the last, the remote command),
# which is the configuration ssh resolves: HostName, Port, User, IdentityFile, ProxyJump, ... .
# OpenSSH's `%C` hashes only host, port and user, so two ssh_config aliases of one git host with
# their own deploy keys shared one master, and site A's git ran as site B's key. `%n` (the alias)
# would name them apart, but a long alias makes the path too long for sun_path, and ssh then
# fails outright; the hash has a fixed length (40 hex digits). `-G` costs one ssh process that
# reads the config (a few ms, no network) per git connection. If `-G` fails, ControlPath=none.
#
# The directory must be ours: a real directory (not a symlink: `-O` alone follows one), owned by
# the user, writable by no one else (a socket planted there would be a "master" we talk to).
# Otherwise, or with a HOME too long for a socket path (sun_path: 108 bytes, with the 40-digit
# name and ssh's 17-byte temporary suffix), or not absolute, or with a character outside
# [A-Za-z0-9/._-] (the path is spliced into GIT_SSH_COMMAND, which git runs with sh), or without
# `sha256sum`, git connects without multiplexing, as before.
GIT_CONNECT_SECONDS = 20
GIT_STALL_SECONDS = 30
_GIT_ALIVE_SECONDS = 10  # ssh keepalive interval; GIT_STALL_SECONDS / this = the keepalives missed
_GIT_MUX_PATH = (
    # Text of GIT_SSH_COMMAND, run by git's sh with git's ssh arguments as "$@": the ControlPath for
    # this call. `$b` is the command up to our options (the marker is this very text). MUXDIR
    # becomes the checked directory, spliced in by the preamble (its characters need no quoting).
    '$(b=${0%%" -o ControlPath=\\$(b="*}; g=$(eval "$b -G \\"\\$@\\"" 2>/dev/null)'
    ' && k=$(printf %s "$g" | sha256sum) && printf %s/%.40s MUXDIR "$k" || echo none)'
)
GIT_PREAMBLE = (
    'export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}"\n'
    'export GIT_HTTP_LOW_SPEED_LIMIT="${GIT_HTTP_LOW_SPEED_LIMIT:-1}"'
    f' GIT_HTTP_LOW_SPEED_TIME="${{GIT_HTTP_LOW_SPEED_TIME:-{GIT_STALL_SECONDS}}}"\n'
    # Once per command: after the first run the word is "1ssh ...", which matches nothing.
    'case ${reconciler_git:-}$GIT_SSH_COMMAND in *reconciler-mux*) ;; ssh|"ssh "*)\n'
    '  reconciler_git=1\n'
    '  m=${HOME:-/nonexistent}/.ssh/reconciler-mux\n'
    '  case $m in [!/]*|*[!A-Za-z0-9/._-]*) m= ;; esac\n'
    '  if [ -n "$m" ] && [ ${#m} -le 48 ] && command -v sha256sum >/dev/null 2>&1 &&\n'
    '     (umask 077 && mkdir -p -- "$m") 2>/dev/null && [ ! -L "$m" ] && [ -d "$m" ] && [ -O "$m" ]; then\n'
    # `ls -l` modes: d rwx rwx rwx; the 6th and 9th characters are group and other write.
    '    case $(ls -ld -- "$m" 2>/dev/null) in d????-??-*)\n'
    "      GIT_SSH_COMMAND=\"$GIT_SSH_COMMAND -o ControlPath=\"'" + _GIT_MUX_PATH.replace("MUXDIR", "'\"$m\"'")
    + "'\" -o ControlMaster=auto -o ControlPersist=300\" ;;\n"
    '    esac\n'
    '  fi\n'
    f'  GIT_SSH_COMMAND="$GIT_SSH_COMMAND -o ConnectTimeout={GIT_CONNECT_SECONDS}'
    f' -o ServerAliveInterval={_GIT_ALIVE_SECONDS}'
    f' -o ServerAliveCountMax={GIT_STALL_SECONDS // _GIT_ALIVE_SECONDS}" ;;\n'
    'esac\n'
)

# Code staged inside a release directory, run from there, removed after the run.
SCRIPT_NAME = ".reconciler-script"
SHARED_NAME = ".reconciler-shared"  # the shared entries to link, staged by the claim for the build
RELOAD_NAME = ".reconciler-reload"


def quote(value: str) -> str:
    """Quote one value for a POSIX shell. Every non-code value goes through here."""
    return shlex.quote(value)


@dataclass(frozen=True)
class Command:
    """One remote command: `text` is what `/bin/sh -c` runs, `stdin` the data it reads."""

    text: str
    stdin: str | None = None


def _line(value: str, what: str) -> str:
    """A value sent as one line of stdin: it must not contain a line break."""
    if "\n" in value or "\r" in value:
        raise ValueError(f"{what} must be a single line")
    return value + "\n"


# --- how a command is started ------------------------------------------------------------------


# Every command starts with this umask, whatever the server's (with umask 000 releases,
# manifests and .git/config came out 0666): releases stay readable by the web server (0644/0755),
# never writable by others. Files that may hold secrets narrow it further where they are made.
UMASK = "umask 022\n"


def local_argv(command: str) -> list[str]:
    """The argv that runs `command` on this machine."""
    return [SH, "-c", UMASK + command]


def remote_line(command: str) -> str:
    """The SSH exec request for `command`. sshd hands it to the login shell, which may not be
    POSIX, so it starts /bin/sh explicitly."""
    return f"{SH} -c {quote(UMASK + command)}"


def too_long(line: str) -> bool:
    """True when `line` cannot be one argument of an exec (it would fail with E2BIG)."""
    return len(line.encode()) + 1 > MAX_ARG_BYTES


# Over SSH a tied command runs on a terminal, and a terminal is no pipe: it echoes, cuts lines
# at 4 KiB and never delivers end-of-file. So its stdin is first staged into a private temp file
# by an untied command, and the tied command reads it from there (unlinked as soon as it is open).
STAGE_STDIN = Command(
    'f=$(umask 077 && mktemp) || exit 1\n'
    'if cat > "$f"; then printf \'%s\\n\' "$f"; else rm -f -- "$f"; exit 1; fi\n'
)


def from_staged(path: str, command: str) -> str:
    """`command` with its stdin read from the staged file at `path` (removed once open)."""
    return f"exec < {quote(path)} || exit 1\nrm -f -- {quote(path)}\n{command}"


# --- the steps of changing a site ---------------------------------------------------------------


def provision(paths: SitePaths) -> Command:
    """Create the site's layout: deployments/{domain}/shared/."""
    return Command(f"mkdir -p -- {quote(paths.shared)}")


def claim_release(paths: SitePaths, release: str, manifest: str, header: str, script: str | None,
                  shared: Iterable[str] = (), *, script_in_lock: bool = False) -> Command:
    """Claim a new release directory with a plain `mkdir` (two deploys can never share one),
    write its manifest and the first line of its log, and stage what the later, tied steps need
    (a tied command cannot take stdin without a round trip of its own): the `shared` entries
    for `build_release` and the deploy `script`.

    stdin: the manifest (one line of JSON), the log header (one line), the shared entries' lines
    (`_shared_lines`), then the script, unless `script_in_lock`: the lock's acquisition staged it
    (`lock_acquire`), and it is moved from there."""
    entries = _shared_lines(paths, release, shared)
    lines = [
        # Whatever stops it (`set -e`: a clash of names), stdin is read to its end (lock_acquire).
        "trap 'cat > /dev/null' EXIT",
        "set -e",
        f"mkdir -p -- {quote(paths.shared)}",
        f"mkdir -- {quote(paths.release(release))}",
        f"cd -- {quote(paths.release(release))}",
        f"IFS= read -r line; printf '%s\\n' \"$line\" > {quote(MANIFEST_NAME + '.tmp')}",
        f"mv -f -- {quote(MANIFEST_NAME + '.tmp')} {quote(MANIFEST_NAME)}",
        # The log holds what the script prints and `sh -x` traces (expanded secrets too): owner-only.
        f"IFS= read -r line; (umask 077 && printf '%s\\n' \"$line\" > {quote(LOG_NAME)})",
        # `read` takes one byte at a time from a pipe: exactly these lines, the script stays unread.
        f"i=0; while [ $i -lt {len(entries)} ]; do IFS= read -r line; printf '%s\\n' \"$line\"; i=$((i + 1)); done"
        f" > {quote(SHARED_NAME)}",
    ]
    if script_in_lock:
        # Staged by lock_acquire (untied, with stdin) while the plan was not known yet.
        lines.append(f"mv -f -- {quote(paths.lock + '/' + SCRIPT_NAME)} {quote(SCRIPT_NAME)}")
    elif script is not None:
        lines.append(f"(umask 077 && cat > {quote(SCRIPT_NAME)})")
    tail = "" if script_in_lock else (script or "")
    data = _line(manifest, "a manifest") + _line(header, "a log header") + "".join(entries) + tail
    return Command("\n".join(lines) + "\n", data)


# A claim's data (manifest, log header, shared entries: no code, no secret) may travel in the
# build command's argv, base64-encoded (nothing to quote, so no growth over SSH), when it is this
# small: far below MAX_ARG_BYTES with the rest of the command. Larger, the claim is a command of
# its own with stdin, one round trip more.
CLAIM_ARG_BYTES = 16 * 1024


def claim_fits(claim: Command) -> bool:
    return claim.stdin is not None and 4 * (len(claim.stdin.encode()) + 2) // 3 <= CLAIM_ARG_BYTES


def write_manifest(paths: SitePaths, release: str, manifest: str) -> Command:
    """Replace a release's manifest atomically (a temp file renamed over it). stdin: the JSON."""
    target = paths.manifest(release)
    return Command(f"cat > {quote(target + '.tmp')} && mv -f -- {quote(target + '.tmp')} {quote(target)}\n",
                   _line(manifest, "a manifest"))


def record_failure(paths: SitePaths, release: str, manifest: str, note: str) -> Command:
    """Mark a release failed: its manifest (atomically), then `note` appended to its log."""
    return record_manifest(paths, release, manifest, note)


def record_manifest(paths: SitePaths, release: str, manifest: str, note: str) -> Command:
    """Rewrite a release's manifest (atomically), then append `note` to its log.
    stdin: the manifest (one line), then the note (any length, any lines)."""
    target = paths.manifest(release)
    return Command(
        f"IFS= read -r line && printf '%s\\n' \"$line\" > {quote(target + '.tmp')} && "
        f"mv -f -- {quote(target + '.tmp')} {quote(target)}\n"
        f"cat >> {quote(paths.log(release))}\n",
        _line(manifest, "a manifest") + note + ("" if note.endswith("\n") else "\n"),
    )


# The mirror keeps every branch and tag of the repository (a tag site's commit may be on no branch).
# Given on the command line, so a mirror made before tags were followed fetches them too.
_MIRROR_REFSPECS = "'+refs/heads/*:refs/heads/*' '+refs/tags/*:refs/tags/*'"


def clone(paths: SitePaths, repository: str, branch: str | None, commit: str, release: str) -> Command:
    """Refresh the site's mirror (remote/mirror.py) and build `release` at exactly `commit` from
    it; output goes to the release's log. Run tied: it takes no stdin.

    With a `branch` (a branch site) the release's work tree is on that branch, tracking
    origin's; without (a tag or commit site) HEAD is detached at `commit`: there is no branch
    the release belongs to, and a script must not push or pull one by accident.

    The mirror fetches every branch and tag. A commit none of them reaches (a `commit` site's
    commit on a deleted branch, say) is then asked for by id, which git hosts that serve any
    reachable commit allow (GitHub, protocol v2 over ssh and file); when the mirror still does
    not have it the step fails with that reason, on stderr and in the log."""
    wanted = quote(commit + "^{commit}")
    # The mirror's branch follows what was fetched for it (a release's origin/<branch> comes from it).
    keep_branch = (f'      git -C "$M" update-ref {quote("refs/heads/" + branch)} {quote(commit)} || :\n'
                   if branch is not None else "")
    why = quote(f"commit {commit} is not in the repository: no branch or tag reaches it, "
                "and the git host does not send it by id")
    if branch is not None:
        checkout = (f"  git checkout --quiet -B {quote(branch)} {quote(commit)} --\n"
                    f"  git branch --quiet --set-upstream-to={quote('origin/' + branch)} || true\n")
    else:
        checkout = f"  git checkout --quiet --detach {quote(commit)} --\n"
    return Command(
        GIT_PREAMBLE
        + f"set -e\nM={quote(mirror_path(paths))}; R={quote(repository)}\n"
        "refresh() {\n"
        '  if [ -d "$M" ] && [ "$(git -C "$M" config --get remote.origin.url 2>/dev/null)" = "$R" ]; then\n'
        # Already there (only the script or shared list changed): no connection to the git host.
        f'    git -C "$M" cat-file -e {wanted} 2>/dev/null && return 0\n'
        # The probe resolved the commit: ask for just it (one connection, only its objects), then
        # everything, from a host that does not serve commits by id.
        f'    if git -C "$M" fetch --quiet --no-tags origin {quote(commit)} 2>/dev/null'
        f' && git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f'{keep_branch}'
        '      return 0\n'
        '    fi\n'
        f'    git -C "$M" fetch --quiet --prune origin {_MIRROR_REFSPECS} && return 0\n'
        "  fi\n"
        "  printf '==> (re)creating the repository cache\\n'\n"
        '  rm -rf -- "$M" "$M.tmp"\n'
        '  git clone --quiet --bare -- "$R" "$M.tmp"\n'
        "  git -C \"$M.tmp\" config remote.origin.fetch '+refs/heads/*:refs/heads/*'\n"
        '  mv -T -- "$M.tmp" "$M"\n'
        "}\n"
        f"cd -- {quote(paths.release(release))}\n"
        "exec 3>&2\n"  # the step's own stderr, for the one message that must reach the operator
        "{ printf '==> clone\\n'\n"
        "  refresh\n"
        f'  if ! git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f'    git -C "$M" fetch --quiet origin {quote(commit)} || :\n'
        f'    if ! git -C "$M" cat-file -e {wanted} 2>/dev/null; then\n'
        f"      why={why}\n"
        "      printf '==> %s\\n' \"$why\"; printf '%s\\n' \"$why\" >&3; exit 1\n"
        "    fi\n"
        "  fi\n"
        '  git clone --quiet --no-checkout -- "$M" .reconciler-clone\n'
        "  mv .reconciler-clone/.git .git && rmdir .reconciler-clone\n"
        '  git remote set-url origin "$R"\n'
        + checkout
        + f"}} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f'test "$(git rev-parse HEAD)" = {quote(commit)}\n'
        # Author and subject for history and notifications, on stdout (core.wire.commit_info).
        "git log -1 --format='%an <%ae>%x00%s%x00' HEAD | head -c 4096\n"
    )


# Fixed text: every value arrives on stdin: the release dir, the shared dir, then three lines per
# entry (kind, entry, link target). Paths hold no line breaks: the validator refuses control
# characters. An app repository controls what the release holds, symlinks included (security
# review M3): no directory between the release and an entry may be a symlink, the entry's parent
# must resolve inside the release, and seeding never copies a symlink. Seeding never widens access
# either (review 2 N11): `cp -a` keeps the repository's modes, but a shared file is where secrets
# go (.env), so a seeded file is owner-only (go-rwx), and a seeded directory loses group/world write.
_LINK_SHARED_BODY = """IFS= read -r R <&3; IFS= read -r S <&3
P=$(cd -P -- "$R" && pwd -P)
refuse() { printf 'shared entry %s: %s\\n' "$e" "$1" >&2; exit 1; }
while IFS= read -r kind <&3 && IFS= read -r e <&3 && IFS= read -r t <&3; do
  s=$S/$e; r=$R/$e; q=; rest=$e
  while :; do
    case $rest in */*) ;; *) break ;; esac
    q=${q:+$q/}${rest%%/*}; rest=${rest#*/}
    [ ! -L "$R/$q" ] || refuse "$q is a symlink in the release; refusing to follow it"
  done
  mkdir -p -- "$(dirname -- "$r")"
  case $(cd -P -- "$(dirname -- "$r")" && pwd -P)/ in
    "$P"/*) ;;
    *) refuse "its parent resolves outside the release" ;;
  esac
  if [ ! -e "$s" ] && [ ! -L "$s" ]; then
    mkdir -p -- "$(dirname -- "$s")"
    if [ -e "$r" ] && [ ! -L "$r" ]; then
      cp -a -- "$r" "$s"
      find "$s" -type l -exec rm -f -- {} +
      if [ -d "$s" ]; then chmod -R go-w -- "$s"; else chmod go-rwx -- "$s"; fi
    elif [ "$kind" = file ]; then (umask 077 && : > "$s")
    else mkdir -- "$s"; fi
  fi
  rm -rf -- "$r"
  ln -s -- "$t" "$r"
done
"""


def link_shared(paths: SitePaths, release: str, shared: Iterable[str]) -> Command:
    """Link every shared entry into the release. A path the repository ships (Laravel's
    storage/) is removed and replaced by the link; linking into it would make storage/storage.
    A missing shared entry is seeded from the repository's copy, else created empty (a file
    when its name starts with '.', else a directory).

    Symlinks the repository ships are never followed (threat model: an app committer cannot
    make a deploy touch files outside its release and shared dir). An entry with a symlink
    between it and the release (`public -> /elsewhere` for `public/uploads`), or whose parent
    resolves outside the release, fails the step with the entry named, before anything is
    removed, copied or linked. A symlink at the entry itself is replaced by our link and never
    copied: the shared entry is then created empty, as if the repository did not ship it. A
    directory seeded from the repository keeps none of its symlinks.

    Seeding never widens access: a file seeded from the repository (an app-shipped .env) is
    owner-only whatever its mode there, a seeded directory loses group and world write; an
    entry created empty is owner-only (file) or takes the umask (directory)."""
    return Command("set -e\nexec 3<&0 < /dev/null\n" + _LINK_SHARED_BODY,
                   "".join(_shared_lines(paths, release, shared)))


def _shared_lines(paths: SitePaths, release: str, shared: Iterable[str]) -> list[str]:
    """What the shared-link loop reads: the release dir, the shared dir, then three lines per
    entry (kind, entry, link target)."""
    data = [_line(paths.release(release), "a release path"), _line(paths.shared, "a shared path")]
    for entry in shared:
        kind = "file" if entry.rsplit("/", 1)[-1].startswith(".") else "dir"
        for value in (kind, entry, shared_link_target(entry)):
            data.append(_line(value, "a shared entry"))
    return data


def build_release(paths: SitePaths, repository: str, branch: str | None, commit: str, release: str,
                  claim: Command | None = None) -> Command:
    """[`claim`,] `clone`, then link the shared entries the claim staged (`link_shared`), in one
    tied command: a deploy's steps that need no answer in between are one round trip (issue 15).
    The claim's stdin arrives in argv, base64 (`claim_fits` says when it may). A failed claim
    exits EXIT_CLAIM, a failure to link EXIT_SHARED, with the reason on stderr; any other failure
    is the clone's. stdout: the commit's author and subject, as `clone` prints them.

    Each part runs in a subshell statement of its own with `set -e`: inside `( ... ) || exit`,
    sh would ignore `set -e`, and a failed `mkdir` of the claim must stop it."""
    text = ""
    if claim is not None:
        if not claim_fits(claim):
            raise ValueError("the claim's data is too long for argv; send claim_release on its own")
        blob = base64.b64encode((claim.stdin or "").encode()).decode()
        text = ("set +e\n"
                f"t=$(umask 077 && mktemp) || exit {EXIT_CLAIM}\n"
                f"printf '%s' {quote(blob)} | base64 -d > \"$t\" || {{ rm -f -- \"$t\"; exit {EXIT_CLAIM}; }}\n"
                f"(\n{claim.text}) < \"$t\"\n"
                f"rc=$?; rm -f -- \"$t\"; [ $rc -eq 0 ] || exit {EXIT_CLAIM}\n")
    staged = quote(SHARED_NAME)
    return Command(
        text
        + clone(paths, repository, branch, commit, release).text
        + f"set +e\n( set -e; exec 3< {staged} < /dev/null; rm -f -- {staged}\n"
        + _LINK_SHARED_BODY
        + f")\n[ $? -eq 0 ] || exit {EXIT_SHARED}\n"
    )


FINISH_MARK = "@@finish"


def finish_release(paths: SitePaths, release: str, manifest: str, reload_code: str | None,
                   lock_owner: str | None, log_bytes: int) -> Command:
    """The end of a deploy in one round trip: record the release's success (its manifest,
    atomically), switch the site to it (`switch`), run the reload command, release the lock
    when `lock_owner` is ours (nothing else is left to do under it), and print the log's last
    `log_bytes`, then one line `FINISH_MARK <reload exit> <unlock exit>` (core.wire.finish_report).

    Exits EXIT_RECORD when the manifest could not be written (nothing switched), a `switch` exit
    code when the switch failed (the success is recorded: the next pass activates the release).
    stdin: the manifest (one line), then the reload code."""
    lines = [
        # All of stdin first, before anything can exit (see lock_acquire): the manifest line, then
        # the reload code into the release (owner-only), where it runs from.
        "IFS= read -r line || line=",
        f"cd -- {quote(paths.release(release))} || {{ cat > /dev/null; exit {EXIT_RECORD}; }}",
        *([f"trap 'rm -f -- {RELOAD_NAME}' EXIT", f"(umask 077 && cat > {quote(RELOAD_NAME)}) || rr=1"]
          if reload_code is not None else []),
        f"[ -n \"$line\" ] && printf '%s\\n' \"$line\" > {quote(MANIFEST_NAME + '.tmp')} && "
        f"mv -f -- {quote(MANIFEST_NAME + '.tmp')} {quote(MANIFEST_NAME)} || exit {EXIT_RECORD}",
        switch(paths, release).text.rstrip("\n"),
        "rr=${rr:-0}; ur=0",
    ]
    if reload_code is not None:
        lines += [f"if [ $rr -eq 0 ]; then {{ printf '==> reload\\n'; {SH} -e ./{RELOAD_NAME}; }}"
                  f" >> {quote(LOG_NAME)} 2>&1 < /dev/null; rr=$?; fi"]
    if lock_owner is not None:
        lines.append(_release_if_ours(paths, lock_owner, "ur"))
    lines += [f"tail -c {int(log_bytes)} -- {quote(LOG_NAME)}",
              f"printf '\\n{FINISH_MARK} %s %s\\n' \"$rr\" \"$ur\"", "exit 0"]
    return Command("\n".join(lines) + "\n", _line(manifest, "a manifest") + (reload_code or ""))


def _json_pair(key: str, value: str) -> str:
    """`"key":"value"` as our compact manifests write it (a JSON string holds no bare quote)."""
    return f'"{key}":"{value}"'


def _release_if_ours(paths: SitePaths, owner_json: str, status: str) -> str:
    """sh that removes the site's lock when its owner file holds `owner_json`; `$status` becomes
    EXIT_LOCK_KEPT when it is ours and stays."""
    lock = quote(paths.lock)
    _line(owner_json, "a lock owner")
    return (f"if [ \"$(cat {lock}/{quote(OWNER_FILE)} 2>/dev/null)\" = {quote(owner_json)} ]; then "
            f"rm -rf -- {lock} || {status}={EXIT_LOCK_KEPT}; fi")


def run_script(paths: SitePaths, release: str, env: Mapping[str, str], trace: bool = True) -> Command:
    """Run the staged deploy script (claim_release) in the release with `sh -e` (and `-x` when
    `trace`), output and trace to the release's log, stdin /dev/null; the staged file is removed
    afterwards. Tied: it takes no stdin."""
    assignments = " ".join(f"{name}={quote(value)}" for name, value in env.items())
    flags = "-e -x" if trace else "-e"
    return Command(
        f"cd -- {quote(paths.release(release))} || exit 1\n"
        f"{{ printf '==> script\\n'; env {assignments} {SH} {flags} ./{SCRIPT_NAME}; }}"
        f" >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f"rc=$?; rm -f -- {quote(SCRIPT_NAME)}; exit $rc\n"
    )


def reload(paths: SitePaths, release: str, code: str) -> Command:
    """Run the reload command (code, any length) with `sh -e` in the release, output to its
    log. stdin: the code, staged into a file first so that it runs with stdin /dev/null."""
    return _staged(paths, release, code, "reload")


def run_once(paths: SitePaths, release: str, code: str) -> Command:
    """Run a site's `script_once` (migrations: one server per deploy) like `reload`."""
    return _staged(paths, release, code, "script_once")


def _staged(paths: SitePaths, release: str, code: str, label: str) -> Command:
    return Command(
        f"cd -- {quote(paths.release(release))} || {{ cat > /dev/null; exit 1; }}\n"
        f"(umask 077 && cat > {quote(RELOAD_NAME)}) || exit 1\n"
        f"{{ printf '==> {label}\\n'; {SH} -e ./{RELOAD_NAME}; }} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f"rc=$?; rm -f -- {quote(RELOAD_NAME)}; exit $rc\n",
        code,
    )


def switch(paths: SitePaths, release: str) -> Command:
    """Atomically point the site symlink at `release`: a new link under a unique temporary
    name in the same directory, then rename(2) over the old one (`mv -T`). Never
    `ln -sfn`, which is unlink+symlink on many systems and leaves a moment with no site at all.
    Refuses to replace a real directory or file (EXIT_NOT_A_SYMLINK) and to point at a
    release that is not there (EXIT_RELEASE_MISSING)."""
    link = paths.site_link
    temp = f"{paths.base_path}/.{paths.domain}.reconciler-{secrets.token_hex(6)}"
    return Command(
        f"if [ -e {quote(link)} ] && [ ! -L {quote(link)} ]; then "
        f"echo {quote(link + ' is not a symlink; refusing to replace it')} >&2; exit {EXIT_NOT_A_SYMLINK}; fi\n"
        f"test -d {quote(paths.release(release))} || "
        f"{{ echo 'release directory is missing' >&2; exit {EXIT_RELEASE_MISSING}; }}\n"
        f"ln -s -- {quote(paths.link_target(release))} {quote(temp)} || exit 1\n"
        f"mv -T -- {quote(temp)} {quote(link)} || {{ rm -f -- {quote(temp)}; exit 1; }}\n"
    )


def remove_releases(paths: SitePaths, releases: Iterable[str], lock_owner: str | None = None) -> Command:
    """`rm -rf` release directories (prune, an aborted build). Only release names are accepted:
    nothing else under deployments/ is ever removed here. With `lock_owner`, then release the
    site's lock if it is ours (`_release_if_ours`)."""
    names = list(releases)
    for name in names:
        if not is_release(name):
            raise ValueError(f"{name!r} is not a release name")
    targets = " ".join(f'"$d"/{quote(name)}' for name in names)
    if lock_owner is None:
        return Command(f"d={quote(paths.deployments)}\nrm -rf -- {targets}\n")
    # The last step under the lock releases it too: exits EXIT_LOCK_KEPT when it stays; when the
    # removal fails, its status, and the lock is left for its holder to release.
    return Command(f"d={quote(paths.deployments)}\nrm -rf -- {targets} || exit\nur=0\n"
                   f"{_release_if_ours(paths, lock_owner, 'ur')}\nexit $ur\n")


def tail_log(path: str, max_bytes: int) -> Command:
    """The last `max_bytes` of a log."""
    return Command(f"tail -c {int(max_bytes)} -- {quote(path)}")


def read_log_base64(path: str, offset: int) -> Command:
    """A log from byte `offset` on, base64-encoded so the bytes arrive exact."""
    return Command(f"tail -c +{int(offset) + 1} -- {quote(path)} | base64")


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


# The file in the lock directory that names its owner, and how much of it a refused taker reads.
OWNER_FILE = "owner"
OWNER_READ_BYTES = 1024

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

# The probe grows with the sites on a server and an argument is capped at 128 KiB, so the script
# travels on stdin into a temporary file and runs from there, with stdin /dev/null.
_RUN_FROM_STDIN = 'f=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null; rc=$?; rm -f -- "$f"; exit $rc'

# The probe prints a record at a time, and sshd sends what a read of the pipe returns: a few
# hundred bytes per SSH packet, and every packet costs the reconciler a decryption and a MAC
# check (the largest item of a no-op pass's CPU at fleet size, issue 15). Written to a file
# first, the output leaves in one `cat`, in full packets.
_RUN_BUFFERED = ('f=$(mktemp) && o=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null > "$o"; rc=$?; '
                 'cat -- "$o"; rm -f -- "$f" "$o"; exit $rc')


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
_FIND_TIMEOUT = (
    "gto=\n"
    "if command -v timeout >/dev/null 2>&1; then\n"
    f"  if timeout -k 1 9 true 2>/dev/null; then gto='timeout -k {GIT_KILL_AFTER}'\n"
    "  elif timeout 9 true 2>/dev/null; then gto=timeout; fi\n"
    "fi\n"
)


def _probe_script(sites: Iterable[ProbeSite], heads: Iterable[tuple[str, str]],
                  bounds: tuple[int, int] = (DEFAULT_GIT_TIMEOUT, 2 * DEFAULT_GIT_TIMEOUT)) -> str:
    """The probe's script up to its end record, without an exit (the lock embeds it). All
    values are quoted. `bounds`: `head_bounds`."""
    lines = [_PROBE_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    each, budget = (int(b) for b in bounds)
    ordered = head_order(heads)
    if ordered:
        lines += [_FIND_TIMEOUT, f"gt={each}; gend=$(($(date +%s) + {budget}))"]
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
    return Command(_RUN_BUFFERED, _probe_script(sites, heads, head_bounds(timeout, git_timeout)) + "exit 0\n")


# --- health checks (remote/health.py) ---------------------------------------------------------

# The health command's framing, shared with its one reader (remote/health.py): each check prints
# exactly one record, `HEALTHY|UNHEALTHY <index> <detail>` then HEALTH_END. Like the probe's
# records (RECORD_END), a record ends with a NUL byte: no shell variable can hold one, and the
# detail goes through `tr` first anyway, so nothing a check prints can end its record early or
# start another check's. The detail is sanitised HERE (every byte but printable ASCII becomes a
# space: control characters, NUL, U+0085/U+2028/U+2029 and any other encoding's line breaks) and
# bounded to MAX_HEALTH_DETAIL bytes; the reader accepts nothing else.
HEALTHY, UNHEALTHY = "@@healthy", "@@unhealthy"
HEALTH_END = "\0"
MAX_HEALTH_DETAIL = 400  # bytes: our fixed words plus at most 240 of the server's text
MAX_HEALTH_BODY = 16 * 1024 * 1024  # bytes of a [health] url answer curl may fetch (`contains` reads it)
_HEALTH_END_PRINTF = f"\\{ord(HEALTH_END):o}"

# check_one INDEX RELEASE_DIR MODE TARGET HOST LOW HIGH NEEDLE TIMEOUT RETRIES INTERVAL GRACE
# MODE url: TARGET is the URL, fetched with curl, Host: HOST; the status must be in LOW..HIGH and
# the body hold NEEDLE (when not empty). MODE command: TARGET is shell code run in the release.
# Prints exactly one record (`answer`). curl runs with: -q (no ~/.curlrc can add options), --globoff
# (`{a,b}` or `[1-9]` in a URL is one request, not many whose output would land in $code),
# --proto (http and https only, whatever the URL says), no -L (a redirect is its own status, never
# followed), --max-filesize, and the body kept only when NEEDLE asks for it.
_HEALTH_FUNCTIONS = rf"""export LC_ALL=C
answer() {{
  d=$(printf '%s' "$2" | tr -c '\040-\176' ' ' | head -c {MAX_HEALTH_DETAIL})
  printf '%s %s %s{_HEALTH_END_PRINTF}' "$1" "$i" "$d"
}}
is_status() {{ case $1 in [0-9][0-9][0-9]) return 0 ;; *) return 1 ;; esac; }}
check_one() {{
  i=$1; r=$2; mode=$3; target=$4; host=$5; lo=$6; hi=$7; needle=$8; t=$9; shift 9; n=$1; gap=$2; grace=$3
  out="$tmp/out.$i"; body=/dev/null
  [ -z "$needle" ] || body="$tmp/body.$i"
  cd -- "$r" 2>/dev/null || {{ answer {UNHEALTHY} "the release directory is missing"; return; }}
  if [ "$mode" = url ] && ! command -v curl >/dev/null 2>&1; then
    answer {UNHEALTHY} "curl is not installed on the server (needed by [health] url)"; return
  fi
  sleep "$grace"
  try=0; why=
  while :; do
    if [ "$mode" = url ]; then
      code=$(curl -q -sS --globoff --proto =http,https --max-filesize {MAX_HEALTH_BODY} -o "$body" \
        -w '%{{http_code}}' --max-time "$t" -H "Host: $host" -- "$target" 2>"$out"); rc=$?
      if [ "$rc" -ne 0 ]; then why="request failed (curl exit $rc): $(head -c 240 "$out")"
      elif ! is_status "$code"; then why="curl printed no HTTP status: $(printf '%s' "$code" | head -c 40)"
      elif [ "$code" -lt "$lo" ] || [ "$code" -gt "$hi" ]; then why="HTTP $code"
      elif [ -n "$needle" ] && ! grep -qF -- "$needle" "$body"; then why="HTTP $code, expected text missing"
      else answer {HEALTHY} "HTTP $code"; return; fi
    else
      timeout "$t" {SH} -c "$target" > "$out" 2>&1 < /dev/null; rc=$?
      if [ "$rc" -eq 0 ]; then answer {HEALTHY} "command exited 0"; return; fi
      if [ "$rc" -eq 124 ]; then why="command timed out after $t s"
      else why="command exited $rc: $(tail -c 240 "$out")"; fi
    fi
    try=$((try + 1))
    [ "$try" -gt "$n" ] && break
    sleep "$gap"
  done
  answer {UNHEALTHY} "$why (after $try tries)"
}}
"""


def _seconds(value: float) -> str:
    return f"{value:g}"


def command_line(argv: Iterable[str]) -> str:
    """`argv` as one shell command line, every word quoted (e.g. GIT_SSH_COMMAND, which git runs
    with the shell)."""
    return " ".join(quote(word) for word in argv)


def health(checks: Iterable[tuple[str, str, HealthCheck]]) -> Command:
    """Run health checks at once, each in its own release dir: (release dir, Host header, check).
    One record of answer per check (HEALTHY/UNHEALTHY, its index, HEALTH_END). stdin: the script, every value
    quoted into it (the script runs from a temporary file, so no value meets an argv limit)."""
    lines = [_HEALTH_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    for index, (release_dir, host, check) in enumerate(checks):
        _line(release_dir, "a release path")
        _line(host, "a host name")
        low, high = check.status_range
        mode, target = ("url", check.url) if check.url is not None else ("command", check.command)
        assert target is not None
        args = [str(index), release_dir, mode, target, host, str(low), str(high), check.contains or "",
                _seconds(check.timeout), str(check.retries), _seconds(check.interval), _seconds(check.grace)]
        lines.append(f"( check_one {' '.join(quote(a) for a in args)} ) > \"$tmp/{index}\" 2>/dev/null &")
    lines += ["wait", 'cat "$tmp"/[0-9]* 2>/dev/null', "exit 0"]
    return Command(_RUN_FROM_STDIN, "\n".join(lines) + "\n")


# --- the per-site lock (remote/lock.py): deployments/{domain}/.reconciler-lock/owner -----------

# The first line of the acquire command's output: the lock is ours (the site's probe follows),
# or `LOCK_HELD <now> <mtime of the lock dir>`, the owner file's first OWNER_READ_BYTES, and last
# a line `LOCK_BEATING 1` when a command that heartbeats the lock (`beating`) still runs, else
# `LOCK_BEATING 0`.
LOCK_ACQUIRED = "@@acquired"
LOCK_HELD = "@@held"
LOCK_BEATING = "@@beating"
# In the lock dir: the PID of the shell of the command that heartbeats it (`beating`).
BEAT_FILE = "beat"
EXIT_LOCK_LOST = 10  # lock_refresh: the lock is no longer ours (taken over, or removed by hand)


SWITCHED = "@@switched"  # lock_acquire with `activate`: `SWITCHED <switch exit>`, or `SWITCHED -` (not tried)


@dataclass(frozen=True)
class HeadCheck:
    """For `lock_acquire(activate=...)` of an unpin: the release is switched to only when the
    branch head is still `commit` and the release was built from it with this `build_key`."""

    repository: str
    ref: str  # refs/heads/<branch>
    commit: str
    build_key: str
    seconds: int = DEFAULT_GIT_TIMEOUT  # the ls-remote's own bound (`head_bounds`): a silent git host
                                        # costs the lock command this much, then the round probes


def lock_acquire(paths: SitePaths, owner_json: str, shared: tuple[str, ...] = (),
                 script: str | None = None, activate: str | None = None,
                 head: HeadCheck | None = None) -> Command:
    """Take the site's lock with an atomic `mkdir`, write `owner_json` (one line) into it and,
    in the same command, probe the site: the facts nobody else can change while we hold it.
    With `script` (stdin), stage the deploy script in the lock for a claim (`claim_release`
    `script_in_lock`): the build that follows is tied and takes no stdin.

    With `activate` (a pin that just landed: issue 15, one round trip from commit to live), switch
    the site to that release under the lock, before the probe, when the release is a directory
    whose manifest records success (our own compact JSON: `"status":"success"` cannot occur inside
    a JSON string) and the site does not point at it yet; a line `SWITCHED <exit>` (or
    `SWITCHED -`) precedes the probe, which then shows the site as it is after the switch."""
    lock, owner = quote(paths.lock), quote(OWNER_FILE)
    _line(owner_json, "a lock owner")
    stage = f"  (umask 077 && cat > {lock}/{quote(SCRIPT_NAME)})\n" if script is not None else ""
    then = ""
    if activate is not None:
        switch_text = switch(paths, activate).text
        manifest = quote(paths.manifest(activate))
        checks = "".join(f" && grep -qF -- {quote(_json_pair(key, value))} {manifest} 2>/dev/null"
                         for key, value in [("status", "success")] + (
                             [("commit", head.commit), ("build_key", head.build_key)] if head else []))
        if head is not None:
            # An unpin: the release must still be the branch head's build (one ls-remote, exact ref).
            then = GIT_PREAMBLE + _FIND_TIMEOUT + (
                f"  h=$(${{gto:+$gto {int(head.seconds)}}} git ls-remote -- {quote(head.repository)} {quote(head.ref)}"
                " 2>/dev/null"
                f" | R={quote(head.ref)} awk -F '\t' '$2 == ENVIRON[\"R\"] {{ print $1 }}')\n")
            checks += f' && [ "$h" = {quote(head.commit)} ]'
        # The planner's rule (core/rollout.py): a release whose run-once step is owed never goes live.
        checks += f" && ! grep -qF -- {quote(_json_pair('once', 'pending'))} {manifest} 2>/dev/null"
        then += (f"  if [ -d {quote(paths.release(activate))} ] && [ ! -L {quote(paths.release(activate))} ]"
                  f"{checks}"
                  f" && [ \"$(readlink -- {quote(paths.site_link)})\" != {quote(paths.link_target(activate))} ]; then\n"
                  f"    ( {switch_text} ) >&2; echo \"{SWITCHED} $?\"\n"
                  f"  else echo {quote(SWITCHED + ' -')}; fi\n")
    return Command(
        f"mkdir -p -- {quote(paths.deployments)} || exit 1\n"
        f"if mkdir -- {lock} 2>/dev/null; then\n"
        f"  printf '%s\\n' {quote(owner_json)} > {lock}/{owner}\n"
        + stage +
        f"  echo {quote(LOCK_ACQUIRED)}\n"
        + then
        + f"{_probe_script([ProbeSite(paths.domain, paths.base_path, shared)], [])}"
        "  true\n"
        "else\n"
        # Read the script we were sent even so: a command that exits with its stdin unread races
        # the client's write, and asyncssh takes what sshd sends after that for a broken connection.
        + ("  cat > /dev/null\n" if script is not None else "")
        + f"  echo \"{LOCK_HELD} $(date +%s) $(stat -c %Y {lock} 2>/dev/null || echo 0)\"\n"
        f"  head -c {OWNER_READ_BYTES} {lock}/{owner} 2>/dev/null || true\n"
        # Is the command that heartbeats the lock still running here? A PID (never 0: `kill -0 0`
        # signals our own group) that is alive. Printed last: the owner's text cannot shadow it.
        + _ALIVE +
        f"  p=; IFS= read -r p < {lock}/{quote(BEAT_FILE)} 2>/dev/null || :\n"
        f"  case $p in ''|0*|*[!0-9]*) b=0 ;; *) if reconciler_alive \"$p\"; then b=1; else b=0; fi ;; esac\n"
        f"  printf '\\n{LOCK_BEATING} %s\\n' \"$b\"\n"
        "fi\n",
        script,
    )


# sh: `reconciler_alive PID` succeeds while that process runs. `kill -0` alone also finds a
# zombie: a killed command's shell stays one until its new parent reaps it (as PID 1 of a
# container may do late, or never), so /proc's state (Linux) must not say Z (zombie) or X (dead).
_ALIVE = """reconciler_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ -r "/proc/$1/status" ] || return 0
  while IFS= read -r l; do
    case $l in State:*[ZX]*) return 1 ;; State:*) return 0 ;; esac
  done < "/proc/$1/status"
  return 0
}
"""


@dataclass(frozen=True)
class Beat:
    """A long command's heartbeat on the site's lock (`beating`): `owner_json` is the lock's owner
    as written, `interval` the seconds between refreshes, `limit` the seconds after which the
    command would have been stopped by its owner (its timeout): no beat outlives that."""

    lock: str
    owner_json: str
    interval: int
    limit: int


def _ours(lock: str, owner_json: str) -> str:
    """sh test: the lock's owner file holds `owner_json`."""
    _line(owner_json, "a lock owner")
    return f'[ "$(cat {quote(lock)}/{quote(OWNER_FILE)} 2>/dev/null)" = {quote(owner_json)} ]'


def beating(command: Command, beat: Beat | None) -> Command:
    """`command`, with a heartbeat of the site's lock while it runs (remote/lock.py explains why it
    lives here): its shell writes its PID into the lock (`BEAT_FILE`, so a taker can see the
    command still running: `lock_acquire`), and a background loop touches the lock dir every
    `interval` seconds while the lock is still ours, that shell still lives (`reconciler_alive
    $$`: a killed shell runs no EXIT trap) and for at most `limit` seconds. The EXIT trap ends the loop
    with the command and touches the lock a last time (the holder counts its next interval from
    there). The loop holds none of the command's streams (a local command's output ends when the
    last holder of its pipe closes it; over SSH, the terminal's)."""
    if beat is None:
        return command
    lock, mine = quote(beat.lock), _ours(beat.lock, beat.owner_json)
    step, limit = max(1, int(beat.interval)), max(1, int(beat.limit))
    last = quote(f'kill "$reconciler_beat" 2>/dev/null; {mine} && touch -c -- {lock}; :')
    return Command(
        _ALIVE
        + f"{mine} && printf '%s\\n' $$ > {lock}/{quote(BEAT_FILE)}\n"
        f"( n=0; while [ $n -lt {limit} ] && reconciler_alive $$ && {mine}; do\n"
        f"    touch -c -- {lock}; sleep {step}; n=$((n + {step}))\n"
        "  done ) < /dev/null > /dev/null 2>&1 &\n"
        "reconciler_beat=$!\n"
        f"trap {last} EXIT\n"
        + command.text,
        command.stdin,
    )


def lock_refresh(paths: SitePaths, owner_json: str) -> Command:
    """Touch the lock dir (its mtime is the lock's heartbeat) when it is still ours; exit
    EXIT_LOCK_LOST when it is not."""
    return Command(f"{_ours(paths.lock, owner_json)} || exit {EXIT_LOCK_LOST}\ntouch -c -- {quote(paths.lock)}\n")


def lock_release(paths: SitePaths, owner_json: str) -> Command:
    """Remove the lock, only if its owner file still holds `owner_json` (only the owner releases).
    Exits 0 when the lock is gone or was not ours, EXIT_LOCK_KEPT when it is ours and stays."""
    lock = quote(paths.lock)
    return Command(f"[ \"$(cat {lock}/{quote(OWNER_FILE)} 2>/dev/null)\" = {quote(owner_json)} ] || exit 0\n"
                   f"rm -rf -- {lock} && exit 0\n"
                   f"exit {EXIT_LOCK_KEPT}")


def _takeover(paths: SitePaths) -> str:
    aside = quote(f"{paths.lock}.stale-{secrets.token_hex(4)}")
    return f"mv -T -- {quote(paths.lock)} {aside} 2>/dev/null && rm -rf -- {aside}; exit 0"


def lock_takeover(paths: SitePaths) -> Command:
    """Remove a stale lock: moved aside first (atomic), so two takers cannot both delete a fresh one."""
    return Command(_takeover(paths))


def unlock(paths: SitePaths) -> Command:
    """Print the lock's owner file, then a newline, and remove the lock whoever holds it."""
    return Command(f"cat {quote(paths.lock)}/{quote(OWNER_FILE)} 2>/dev/null; echo; {_takeover(paths)}")
