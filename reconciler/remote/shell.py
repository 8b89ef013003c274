"""The shell seam: the one place that turns values into POSIX sh text.

Every remote command the reconciler sends is built here: quoting, the non-interactive git
preamble, how a command is started (`/bin/sh -c`, locally and over SSH), the exit codes that
scripts and Python agree on, and one builder per step of changing a site. Nothing else in
the package assembles shell text (tests/test_shell_seam.py enforces it; probe.py and lock.py
are still exempt there and move here next).

Two rules keep values data:

* Every non-code value inside a command goes through `quote` (and after `--` for programs
  that take options).
* Long values never travel in argv. A command line is one argument of `/bin/sh -c`, which
  Linux caps at 128 KiB (MAX_ARG_STRLEN), and quoting grows a `'` to five characters (over
  SSH, where the command is quoted once more, to seventeen). So the deploy script, the
  reload command, manifests, log notes and the shared list travel on the command's *stdin*
  (`Command.stdin`), raw and unquoted, to a small fixed command. Only paths, the repository
  URL, the branch and the commit are quoted into argv; each is bounded by what a file system
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

import secrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.core.layout import LOG_NAME, MANIFEST_NAME, SitePaths, is_release, shared_link_target
from reconciler.remote.mirror import mirror_path

SH = "/bin/sh"

# Exit codes shared by the commands below and the Python that reads them.
EXIT_NOT_A_SYMLINK = 3   # switch: the site path is a real directory or file; never replaced
EXIT_RELEASE_MISSING = 4  # switch: the release to activate is not on the server
EXIT_CANNOT_RUN = 126    # the command never started (E2BIG: too long for one argument); as sh reports it

# Linux's limit on ONE argument (MAX_ARG_STRLEN, 32 pages of 4 KiB, counting the final NUL).
# A command longer than this cannot be started by `sh -c` here, nor by sshd's `$SHELL -c` there.
MAX_ARG_BYTES = 128 * 1024

# Git must never stop to ask a question: no terminal prompt, no interactive ssh.
GIT_PREAMBLE = 'export GIT_TERMINAL_PROMPT=0 GIT_SSH_COMMAND="${GIT_SSH_COMMAND:-ssh -o BatchMode=yes}"\n'

# Code staged inside a release directory, run from there, removed after the run.
SCRIPT_NAME = ".reconciler-script"
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


def local_argv(command: str) -> list[str]:
    """The argv that runs `command` on this machine."""
    return [SH, "-c", command]


def remote_line(command: str) -> str:
    """The SSH exec request for `command`. sshd hands it to the login shell, which may not be
    POSIX, so it starts /bin/sh explicitly."""
    return f"{SH} -c {quote(command)}"


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


def claim_release(paths: SitePaths, release: str, manifest: str, header: str, script: str | None) -> Command:
    """Claim a new release directory with a plain `mkdir` (two deploys can never share one),
    write its manifest and the first line of its log, and stage the deploy `script`.

    stdin: the manifest (one line of JSON), the log header (one line), then the script."""
    lines = [
        "set -e",
        f"mkdir -p -- {quote(paths.shared)}",
        f"mkdir -- {quote(paths.release(release))}",
        f"cd -- {quote(paths.release(release))}",
        f"IFS= read -r line; printf '%s\\n' \"$line\" > {quote(MANIFEST_NAME + '.tmp')}",
        f"mv -f -- {quote(MANIFEST_NAME + '.tmp')} {quote(MANIFEST_NAME)}",
        f"IFS= read -r line; printf '%s\\n' \"$line\" > {quote(LOG_NAME)}",
    ]
    if script is not None:
        lines.append(f"(umask 077 && cat > {quote(SCRIPT_NAME)})")
    data = _line(manifest, "a manifest") + _line(header, "a log header") + (script or "")
    return Command("\n".join(lines) + "\n", data)


def write_manifest(paths: SitePaths, release: str, manifest: str) -> Command:
    """Replace a release's manifest atomically (a temp file renamed over it). stdin: the JSON."""
    target = paths.manifest(release)
    return Command(f"cat > {quote(target + '.tmp')} && mv -f -- {quote(target + '.tmp')} {quote(target)}\n",
                   _line(manifest, "a manifest"))


def record_failure(paths: SitePaths, release: str, manifest: str, note: str) -> Command:
    """Mark a release failed: its manifest (atomically), then `note` appended to its log.
    stdin: the manifest (one line), then the note (any length, any lines)."""
    target = paths.manifest(release)
    return Command(
        f"IFS= read -r line && printf '%s\\n' \"$line\" > {quote(target + '.tmp')} && "
        f"mv -f -- {quote(target + '.tmp')} {quote(target)}\n"
        f"cat >> {quote(paths.log(release))}\n",
        _line(manifest, "a manifest") + note + ("" if note.endswith("\n") else "\n"),
    )


def clone(paths: SitePaths, repository: str, branch: str, commit: str, release: str) -> Command:
    """Refresh the site's mirror (remote/mirror.py) and build `release` at exactly `commit` from
    it; output goes to the release's log. Run tied: it takes no stdin."""
    return Command(
        GIT_PREAMBLE
        + f"set -e\nM={quote(mirror_path(paths))}; R={quote(repository)}\n"
        "refresh() {\n"
        '  if [ -d "$M" ] && [ "$(git -C "$M" config --get remote.origin.url 2>/dev/null)" = "$R" ]; then\n'
        # Already there (only the script or shared list changed): no connection to the git host.
        f'    git -C "$M" cat-file -e {quote(commit + "^{commit}")} 2>/dev/null && return 0\n'
        '    git -C "$M" fetch --quiet --prune origin && return 0\n'
        "  fi\n"
        "  printf '==> (re)creating the repository cache\\n'\n"
        '  rm -rf -- "$M" "$M.tmp"\n'
        '  git clone --quiet --bare -- "$R" "$M.tmp"\n'
        "  git -C \"$M.tmp\" config remote.origin.fetch '+refs/heads/*:refs/heads/*'\n"
        '  mv -T -- "$M.tmp" "$M"\n'
        "}\n"
        f"cd -- {quote(paths.release(release))}\n"
        "{ printf '==> clone\\n'\n"
        "  refresh\n"
        f'  git -C "$M" cat-file -e {quote(commit + "^{commit}")}\n'
        '  git clone --quiet --no-checkout -- "$M" .reconciler-clone\n'
        "  mv .reconciler-clone/.git .git && rmdir .reconciler-clone\n"
        '  git remote set-url origin "$R"\n'
        f"  git checkout --quiet -B {quote(branch)} {quote(commit)} --\n"
        f"  git branch --quiet --set-upstream-to={quote('origin/' + branch)} || true\n"
        f"}} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f'test "$(git rev-parse HEAD)" = {quote(commit)}\n'
    )


# Fixed text: every value arrives on stdin, four lines per entry (kind, shared path, path in the
# release, link target). Paths hold no line breaks: the validator refuses control characters.
_LINK_SHARED = """set -e
exec 3<&0 < /dev/null
while IFS= read -r kind <&3 && IFS= read -r s <&3 && IFS= read -r r <&3 && IFS= read -r t <&3; do
  if [ ! -e "$s" ] && [ ! -L "$s" ]; then
    mkdir -p -- "$(dirname -- "$s")"
    if [ -e "$r" ] || [ -L "$r" ]; then cp -a -- "$r" "$s"
    elif [ "$kind" = file ]; then : > "$s"
    else mkdir -- "$s"; fi
  fi
  rm -rf -- "$r"; mkdir -p -- "$(dirname -- "$r")"
  ln -s -- "$t" "$r"
done
"""


def link_shared(paths: SitePaths, release: str, shared: Iterable[str]) -> Command:
    """Link every shared entry into the release. A path the repository ships (Laravel's
    storage/) is removed and replaced by the link; linking into it would make storage/storage.
    A missing shared entry is seeded from the repository's copy, else created empty (a file
    when its name starts with '.', else a directory)."""
    data = []
    for entry in shared:
        kind = "file" if entry.rsplit("/", 1)[-1].startswith(".") else "dir"
        for value in (kind, f"{paths.shared}/{entry}", f"{paths.release(release)}/{entry}",
                      shared_link_target(entry)):
            data.append(_line(value, "a shared entry"))
    return Command(_LINK_SHARED, "".join(data))


def run_script(paths: SitePaths, release: str, env: Mapping[str, str]) -> Command:
    """Run the staged deploy script (claim_release) in the release with `sh -e -x`, output and
    trace to the release's log, stdin /dev/null; the staged file is removed afterwards. Tied:
    it takes no stdin."""
    assignments = " ".join(f"{name}={quote(value)}" for name, value in env.items())
    return Command(
        f"cd -- {quote(paths.release(release))} || exit 1\n"
        f"{{ printf '==> script\\n'; env {assignments} {SH} -e -x ./{SCRIPT_NAME}; }}"
        f" >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
        f"rc=$?; rm -f -- {quote(SCRIPT_NAME)}; exit $rc\n"
    )


def reload(paths: SitePaths, release: str, code: str) -> Command:
    """Run the reload command (code, any length) with `sh -e` in the release, output to its
    log. stdin: the code, staged into a file first so that it runs with stdin /dev/null."""
    return Command(
        f"cd -- {quote(paths.release(release))} || exit 1\n"
        f"(umask 077 && cat > {quote(RELOAD_NAME)}) || exit 1\n"
        f"{{ printf '==> reload\\n'; {SH} -e ./{RELOAD_NAME}; }} >> {quote(LOG_NAME)} 2>&1 < /dev/null\n"
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


def remove_releases(paths: SitePaths, releases: Iterable[str]) -> Command:
    """`rm -rf` release directories (prune, an aborted build). Only release names are accepted:
    nothing else under deployments/ is ever removed here."""
    names = list(releases)
    for name in names:
        if not is_release(name):
            raise ValueError(f"{name!r} is not a release name")
    targets = " ".join(f'"$d"/{quote(name)}' for name in names)
    return Command(f"d={quote(paths.deployments)}\nrm -rf -- {targets}\n")


def tail_log(path: str, max_bytes: int) -> Command:
    """The last `max_bytes` of a log."""
    return Command(f"tail -c {int(max_bytes)} -- {quote(path)}")


def read_log_base64(path: str, offset: int) -> Command:
    """A log from byte `offset` on, base64-encoded so the bytes arrive exact."""
    return Command(f"tail -c +{int(offset) + 1} -- {quote(path)} | base64")
