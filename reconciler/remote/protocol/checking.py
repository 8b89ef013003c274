"""Health checks: one command runs every `[health]` check of a server's sites at once, one
record per check, and the one reader of what it answers.

The answers are server data, read here and nowhere else, framed like the probe's records: one
record per check, `HEALTHY|UNHEALTHY <index> <detail>` ended by a NUL byte, the detail printable
ASCII that the server side already sanitised and bounded. Only HEALTH_END separates records, so
no character a check prints (a newline, U+2028, U+0085, the FS byte 0x1c) can start another
check's answer; the shell makes sure it cannot print the end byte either.

Strict and total: a record whose marker and index (in range) are ours is that check's answer,
or, with a detail that is not what the writer prints, a MALFORMED one; any other record, and a
last record cut short, answers for nobody. A check with no answer, or with more than one, is
unhealthy with a reason saying so."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.health import HealthCheck
from reconciler.remote.protocol.seam import RUN_FROM_STDIN, SH, Command, one_line, quote, seconds

# --- the command -----------------------------------------------------------------------------------

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
  try=0; why=; tries=
  while :; do
    if [ "$mode" = url ]; then
      code=$(curl -q -sS --globoff --proto =http,https --max-filesize {MAX_HEALTH_BODY} -o "$body" \
        -w '%{{http_code}}' --max-time "$t" -H "Host: $host" -- "$target" 2>"$out"); rc=$?
      if [ "$rc" -ne 0 ]; then why=$(head -c 240 "$out"); why="request failed: ${{why:-curl exit $rc}}"
      elif ! is_status "$code"; then why="curl printed no HTTP status: $(printf '%s' "$code" | head -c 40)"
      elif [ "$code" -lt "$lo" ] || [ "$code" -gt "$hi" ]; then why="HTTP $code"
      elif [ -n "$needle" ] && ! grep -qF -- "$needle" "$body"; then why="HTTP $code, expected text missing"
      else answer {HEALTHY} "HTTP $code"; return; fi
    else
      timeout "$t" {SH} -c "$target" > "$out" 2>&1 < /dev/null; rc=$?
      if [ "$rc" -eq 0 ]; then answer {HEALTHY} "command exited 0"; return; fi
      if [ "$rc" -eq 124 ]; then why="command timed out after $t s"
      else why=$(tail -c 240 "$out"); why="command exited $rc${{why:+: $why}}"; fi
    fi
    try=$((try + 1))
    [ "$try" -gt "$n" ] && break
    sleep "$gap"
  done
  [ "$try" -eq 1 ] && tries="1 try" || tries="$try tries"
  answer {UNHEALTHY} "$why (after $tries)"
}}
"""


def health(checks: Iterable[tuple[str, str, HealthCheck]]) -> Command:
    """Run health checks at once, each in its own release dir: (release dir, Host header, check).
    One record of answer per check (HEALTHY/UNHEALTHY, its index, HEALTH_END). stdin: the script, every value
    quoted into it (the script runs from a temporary file, so no value meets an argv limit)."""
    lines = [_HEALTH_FUNCTIONS, 'tmp=$(mktemp -d) || exit 1', "trap 'rm -rf \"$tmp\"' EXIT"]
    for index, (release_dir, host, check) in enumerate(checks):
        one_line(release_dir, "a release path")
        one_line(host, "a host name")
        low, high = check.status_range
        mode, target = ("url", check.url) if check.url is not None else ("command", check.command)
        assert target is not None
        args = [str(index), release_dir, mode, target, host, str(low), str(high), check.contains or "",
                seconds(check.timeout), str(check.retries), seconds(check.interval), seconds(check.grace)]
        lines.append(f"( check_one {' '.join(quote(a) for a in args)} ) > \"$tmp/{index}\" 2>/dev/null &")
    lines += ["wait", 'cat "$tmp"/[0-9]* 2>/dev/null', "exit 0"]
    return Command(RUN_FROM_STDIN, "\n".join(lines) + "\n")


# --- the reader ---------------------------------------------------------------------------------

_DETAIL_RE = re.compile(rf"[\x20-\x7e]{{0,{MAX_HEALTH_DETAIL}}}")
MAX_REASON = 300

NO_ANSWER = "no answer from the check"
ANSWERED_TWICE = "the check answered more than once"
MALFORMED = "the check's answer is malformed"


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # "HTTP 200", or why it failed: "HTTP 500", "command exited 1: ..."


def frame(ok: bool, index: int, detail: str) -> str:
    """One answer as the health command prints it (for tests and tools that build output)."""
    return f"{HEALTHY if ok else UNHEALTHY} {index} {detail}{HEALTH_END}"


def _answer(record: str, count: int) -> tuple[int, HealthResult] | None:
    """Whose answer one record is, and what it says; None when it names no check of ours."""
    mark, _, rest = record.partition(" ")
    index_text, _, detail = rest.partition(" ")
    index = wire.parse_uint(index_text, count - 1) if mark in (HEALTHY, UNHEALTHY) else None
    if index is None:
        return None
    if not _DETAIL_RE.fullmatch(detail):
        return index, HealthResult(False, MALFORMED)
    return index, HealthResult(mark == HEALTHY, wire.display(" ".join(detail.split()), MAX_REASON))


def parse_results(text: str, count: int) -> list[HealthResult]:
    """What a health command answered for checks 0..count-1: one record each (see the module's
    docstring). Total: any text gives `count` results."""
    records = text.split(HEALTH_END)
    records.pop()  # after the last end byte: nothing, or a record cut short (whose, unknown)
    seen: dict[int, list[HealthResult]] = {}
    for record in records:
        answer = _answer(record, count)
        if answer is not None:
            seen.setdefault(answer[0], []).append(answer[1])
    results = []
    for index in range(count):
        answers = seen.get(index, [])
        if len(answers) == 1:
            results.append(answers[0])
        else:
            results.append(HealthResult(False, NO_ANSWER if not answers else ANSWERED_TWICE))
    return results
