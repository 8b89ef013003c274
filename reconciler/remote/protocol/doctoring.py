"""`reconciler doctor`: one command per server checks what the server needs, and the one reader
of what it answers.

What is checked (a `Check` each, chosen by remote/doctor.py from the server's sites):

* PROGRAM: a program is on the deploy user's PATH (git; curl and timeout for health checks).
* GNU_FIND: `find` is GNU find (`-printf`: the probe reads every site link in one process).
* GIT_REMOTE: `git ls-remote` of a declared app repository answers, as the deploy does it (the
  same preamble: never interactive, bounded): the real test of the deploy user's git key and
  known_hosts for that repository's host.
* SUDO: `sudo -n -l` allows the reload command without a password (`php = "8.2"` runs `sudo
  service php8.2-fpm reload` after each switch; sudo cannot ask for a password there).
* FPM: PHP-FPM's php-fpm.conf sets `process_control_timeout` above 0 (without it a reload ends
  in-flight requests with 502s).
* DISK: the free space of the file system holding base_path (or its nearest existing parent).

Framing as the health checks' (remote/protocol/checking.py): every check prints exactly one
record, `@@ok|@@missing <index> <detail>` ended by a NUL byte, the detail printable ASCII that
the shell already sanitised and bounded. The reader is strict and total: a record whose marker
and index are ours is that check's answer; a detail that is not what the writer prints, no
answer, or two answers make the check's result "missing" with a reason saying so."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core import wire
from reconciler.remote.protocol.gitenv import GIT_PREAMBLE
from reconciler.remote.protocol.heads import FIND_TIMEOUT
from reconciler.remote.protocol.seam import RUN_FROM_STDIN, Command, one_line, quote


class Kind(StrEnum):
    PROGRAM = "program"
    GNU_FIND = "gnu_find"
    GIT_REMOTE = "git_remote"
    SUDO = "sudo"
    FPM = "fpm"
    DISK = "disk"


@dataclass(frozen=True)
class Check:
    """One thing to check; `args`: the program, the repository URL, the reload command's words,
    the php-fpm.conf path, or base_path and the KiB it must have free."""

    kind: Kind
    args: tuple[str, ...] = ()


OK, MISSING = "@@ok", "@@missing"
END = "\0"
MAX_DETAIL = 300  # bytes: our words plus at most 200 of a program's output
_END_PRINTF = f"\\{ord(END):o}"

# One function per kind; each prints exactly one record through `answer`. `$t`: the seconds one
# `git ls-remote` may take ($gto: `timeout` where the server has one, from heads.FIND_TIMEOUT).
_FUNCTIONS = rf"""export LC_ALL=C
answer() {{
  d=$(printf '%s' "$2" | tr -c '\040-\176' ' ' | head -c {MAX_DETAIL})
  printf '%s %s %s{_END_PRINTF}' "$1" "$i" "$d"
}}
c_program() {{
  if p=$(command -v "$1" 2>/dev/null); then answer {OK} "$p"; else answer {MISSING} "not found on PATH $PATH"; fi
}}
c_gnu_find() {{
  if find / -maxdepth 0 -printf '' >/dev/null 2>&1; then answer {OK} "$(find --version 2>/dev/null | head -n 1)"
  else answer {MISSING} "find has no -printf (not GNU find)"; fi
}}
c_git_remote() {{
  command -v git >/dev/null 2>&1 || {{ answer {MISSING} "git is not installed"; return; }}
  if [ -n "$gto" ]; then out=$($gto "$t" git ls-remote -- "$1" HEAD 2>&1 >/dev/null); rc=$?
  else out=$(git ls-remote -- "$1" HEAD 2>&1 >/dev/null); rc=$?; fi
  if [ "$rc" -eq 0 ]; then answer {OK} "git ls-remote answered"
  else answer {MISSING} "git ls-remote exit $rc: $(printf '%s' "$out" | tail -c 200)"; fi
}}
c_sudo() {{
  command -v sudo >/dev/null 2>&1 || {{ answer {MISSING} "sudo is not installed"; return; }}
  if out=$(sudo -n -l -- "$@" 2>&1); then answer {OK} "sudo -n allows: $*"
  else answer {MISSING} "sudo -n -l $*: $(printf '%s' "$out" | tail -c 200)"; fi
}}
c_fpm() {{
  [ -r "$1" ] || {{ answer {MISSING} "no $1 here"; return; }}
  s='[[:space:]]*'
  v=$(sed -n "s/^${{s}}process_control_timeout$s=$s\\([^[:space:];]*\\).*/\\1/p" "$1" | tail -n 1)
  case $v in
    ""|0|0s|0m|0h|0d) answer {MISSING} "process_control_timeout is ${{v:-not set}} in $1" ;;
    *) answer {OK} "process_control_timeout = $v in $1" ;;
  esac
}}
c_disk() {{
  d=$1
  while [ ! -d "$d" ]; do d=$(dirname -- "$d"); done
  free=$(df -Pk -- "$d" 2>/dev/null | awk 'NR == 2 {{ print $4 }}')
  case $free in ""|*[!0-9]*) answer {MISSING} "df could not tell the free space of $d"; return ;; esac
  if [ "$free" -ge "$2" ]; then answer {OK} "$free KiB free on $d"; else answer {MISSING} "$free KiB free on $d"; fi
}}
"""


def doctor(checks: Sequence[Check], git_seconds: int) -> Command:
    """Run `checks` at once, each its own background job; one record each, in any order. stdin:
    the script, every value quoted into it."""
    lines = [GIT_PREAMBLE, FIND_TIMEOUT, _FUNCTIONS, f"t={git_seconds}", 'tmp=$(mktemp -d) || exit 1',
             "trap 'rm -rf \"$tmp\"' EXIT"]
    for index, check in enumerate(checks):
        for arg in check.args:
            one_line(arg, "a doctor check's value")
        args = " ".join(quote(arg) for arg in check.args)
        lines.append(f"( i={index}; c_{check.kind} {args} ) > \"$tmp/{index}\" 2>/dev/null < /dev/null &")
    lines += ["wait", 'cat "$tmp"/[0-9]* 2>/dev/null', "exit 0"]
    return Command(RUN_FROM_STDIN, "\n".join(lines) + "\n")


# --- the reader ---------------------------------------------------------------------------------

_DETAIL_RE = re.compile(rf"[\x20-\x7e]{{0,{MAX_DETAIL}}}")
NO_ANSWER = "no answer from the check"
ANSWERED_TWICE = "the check answered more than once"
MALFORMED = "the check's answer is malformed"


@dataclass(frozen=True)
class Answer:
    ok: bool
    detail: str  # what was found ("/usr/bin/git"), or what is missing


def frame(ok: bool, index: int, detail: str) -> str:
    """One answer as the doctor command prints it (for tests and tools that build output)."""
    return f"{OK if ok else MISSING} {index} {detail}{END}"


def _record(record: str, count: int) -> tuple[int, Answer] | None:
    mark, _, rest = record.partition(" ")
    index_text, _, detail = rest.partition(" ")
    index = wire.parse_uint(index_text, count - 1) if mark in (OK, MISSING) and count > 0 else None
    if index is None:
        return None
    if not _DETAIL_RE.fullmatch(detail):
        return index, Answer(False, MALFORMED)
    return index, Answer(mark == OK, " ".join(detail.split()))


def parse_answers(text: str, count: int) -> list[Answer]:
    """What the doctor command answered for checks 0..count-1. Total: any text gives `count`
    answers; a check without exactly one well-formed answer of its own is not ok."""
    records = text.split(END)
    records.pop()  # after the last end byte: nothing, or a record cut short (whose, unknown)
    seen: dict[int, list[Answer]] = {}
    for record in records:
        found = _record(record, count)
        if found is not None:
            seen.setdefault(found[0], []).append(found[1])
    answers = []
    for index in range(count):
        mine = seen.get(index, [])
        answers.append(mine[0] if len(mine) == 1 else Answer(False, NO_ANSWER if not mine else ANSWERED_TWICE))
    return answers
