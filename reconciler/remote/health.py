"""Running health checks on a server and reading their answers.

One command per server runs every check asked of it at once (remote/shell.py `health`): after a
switch that is one site, at a poll every live site of the server with a `[health]` table. The
answers are server data, read here and nowhere else: one line per check, anything else ignored,
a check with no answer (or two) unhealthy with a reason, every detail escaped and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.health import HealthCheck
from reconciler.remote import shell
from reconciler.remote.transport import Transport

_RESULT_RE = re.compile(r"(@@healthy|@@unhealthy) (0|[1-9][0-9]{0,5}) ?(.*)")
MAX_REASON = 300
SLACK = 15.0  # seconds beyond the checks' own deadline before the command itself times out


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # "HTTP 200", or why it failed: "HTTP 500", "command exited 1: ..."


def parse_results(text: str, count: int) -> list[HealthResult]:
    """What a health command answered for checks 0..count-1: one line each,
    `@@healthy <i> <detail>` or `@@unhealthy <i> <reason>`. Total: a check with no line, or
    with more than one, is unhealthy with a reason saying so; other lines are ignored."""
    seen: dict[int, list[HealthResult]] = {}
    for line in text.splitlines():
        match = _RESULT_RE.fullmatch(line)
        if match is None or not count:
            continue
        index = wire.parse_uint(match.group(2), count - 1)
        if index is None:
            continue
        detail = wire.display(" ".join(match.group(3).split()), MAX_REASON)
        seen.setdefault(index, []).append(HealthResult(match.group(1) == shell.HEALTHY, detail))
    results = []
    for index in range(count):
        answers = seen.get(index, [])
        if len(answers) == 1:
            results.append(answers[0])
        else:
            why = "no answer from the check" if not answers else "the check answered more than once"
            results.append(HealthResult(False, why))
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
    command = shell.health([(p.release_dir, p.host, p.check) for p in probes])
    deadline = max(p.check.deadline for p in probes) + SLACK
    result = await transport.run(command.text, stdin=command.stdin, timeout=deadline)
    if not result.ok and not result.stdout:
        why = f"the health command could not run (exit {result.exit_status}): {wire.display(result.tail(2), 200)}"
        return [HealthResult(False, why) for _ in probes]
    return parse_results(result.stdout, len(probes))
