"""Running health checks on a server and reading their answers.

One command per server runs every check asked of it at once (remote/protocol/checking.py `health`): after a
switch that is one site, at a poll every live site of the server with a `[health]` table. The
answers are server data, read here and nowhere else, framed like the probe's records (the
markers and the end byte are remote/protocol/checking.py's, shared with the writer): one record per check,
`HEALTHY|UNHEALTHY <index> <detail>` ended by a NUL byte, the detail printable ASCII that the
server side already sanitised and bounded. Only HEALTH_END separates records, so no character a
check prints (a newline, U+2028, U+0085, the FS byte 0x1c) can start another check's answer; the
shell makes sure it cannot print the end byte either.

Strict and total: a record whose marker and index (in range) are ours is that check's answer,
or, with a detail that is not what the writer prints, a MALFORMED one; any other record, and a
last record cut short, answers for nobody. A check with no answer, or with more than one, is
unhealthy with a reason saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.health import HealthCheck
from reconciler.remote.protocol import checking
from reconciler.remote.protocol.checking import HEALTH_END, HEALTHY, MAX_HEALTH_DETAIL, UNHEALTHY
from reconciler.remote.transport import Transport

_DETAIL_RE = re.compile(rf"[\x20-\x7e]{{0,{MAX_HEALTH_DETAIL}}}")
MAX_REASON = 300
SLACK = 15.0  # seconds beyond the checks' own deadline before the command itself times out

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


@dataclass(frozen=True)
class Probe:
    """One check to run: in `release_dir`, with `host` as the HTTP Host header."""

    release_dir: str
    host: str
    check: HealthCheck


async def run(transport: Transport, probes: list[Probe]) -> list[HealthResult]:
    """Run `probes` on the server at once; one result each, in order. A command that could not
    run at all makes every probe unhealthy with the reason (raises only TransportError)."""
    if not probes:
        return []
    command = checking.health([(p.release_dir, p.host, p.check) for p in probes])
    deadline = max(p.check.deadline for p in probes) + SLACK
    result = await transport.run(command.text, stdin=command.stdin, timeout=deadline)
    if not result.ok and not result.stdout:
        why = f"the health command could not run (exit {result.exit_status}): {wire.display(result.tail(2), 200)}"
        return [HealthResult(False, why) for _ in probes]
    return parse_results(result.stdout, len(probes))
