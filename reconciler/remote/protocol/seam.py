"""The shell seam: the one place that turns values into POSIX sh text, and how a command is
started. Every wire protocol (remote/protocol/*) builds its commands with these primitives.

Two rules keep values data:

* Every non-code value inside a command goes through `quote` (and after `--` for programs
  that take options).
* Long values never travel in argv. A command line is one argument of `/bin/sh -c`, which
  Linux caps at 128 KiB (MAX_ARG_STRLEN), and quoting grows a `'` to five characters (over
  SSH, where the command is quoted once more, to seventeen). So the deploy script, the
  reload command, manifests, log notes and the shared list travel on the command's *stdin*
  (`Command.stdin`), raw and unquoted, to a small fixed command.

A command that cannot even start (the kernel refuses an over-long argument with E2BIG) is
reported by the transports as `EXIT_CANNOT_RUN`, a failure of that step, never as an
unreachable server: retrying cannot make it shorter. The exit codes below are shared by the
commands and the Python that reads them.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

SH = "/bin/sh"

# Exit codes shared by the commands below and the Python that reads them.
EXIT_NOT_A_SYMLINK = 3   # switch: the site path is a real directory or file; never replaced
EXIT_RELEASE_MISSING = 4  # switch: the release to activate is not on the server
EXIT_LOCK_KEPT = 5        # lock release: the lock is ours but could not be removed
EXIT_SHARED = 7           # build: the release was cloned, but linking a shared entry failed
EXIT_RECORD = 8           # finish: the release's manifest could not be written; nothing switched
EXIT_CLAIM = 9            # build: the release directory could not be claimed (`claim_release`)
EXIT_COPY = 10            # build: cloned and linked, but copying from the live release failed
EXIT_CANNOT_RUN = 126    # the command never started (E2BIG: too long for one argument); as sh reports it

# Linux's limit on ONE argument (MAX_ARG_STRLEN, 32 pages of 4 KiB, counting the final NUL).
# A command longer than this cannot be started by `sh -c` here, nor by sshd's `$SHELL -c` there.
MAX_ARG_BYTES = 128 * 1024


def quote(value: str) -> str:
    """Quote one value for a POSIX shell. Every non-code value goes through here."""
    return shlex.quote(value)


@dataclass(frozen=True)
class Command:
    """One remote command: `text` is what `/bin/sh -c` runs, `stdin` the data it reads."""

    text: str
    stdin: str | None = None


def one_line(value: str, what: str) -> str:
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


def json_pair(key: str, value: str) -> str:
    """`"key":"value"` as our compact manifests write it (a JSON string holds no bare quote)."""
    return f'"{key}":"{value}"'


# The probe grows with the sites on a server and an argument is capped at 128 KiB, so the script
# travels on stdin into a temporary file and runs from there, with stdin /dev/null.
RUN_FROM_STDIN = 'f=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null; rc=$?; rm -f -- "$f"; exit $rc'

# The probe prints a record at a time, and sshd sends what a read of the pipe returns: a few
# hundred bytes per SSH packet, and every packet costs the reconciler a decryption and a MAC
# check (the largest item of a no-op pass's CPU at fleet size). Written to a file
# first, the output leaves in one `cat`, in full packets.
RUN_BUFFERED = ('f=$(mktemp) && o=$(mktemp) || exit 1; cat > "$f"; sh "$f" < /dev/null > "$o"; rc=$?; '
                 'cat -- "$o"; rm -f -- "$f" "$o"; exit $rc')


def seconds(value: float) -> str:
    return f"{value:g}"


def command_line(argv: Iterable[str]) -> str:
    """`argv` as one shell command line, every word quoted (e.g. GIT_SSH_COMMAND, which git runs
    with the shell)."""
    return " ".join(quote(word) for word in argv)
