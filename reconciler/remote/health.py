"""Running health checks on a server: one command per server runs every check asked of it at
once (after a switch that is one site, at a poll every live site of the server with a `[health]`
table). The command and the strict reader of its answers are remote/protocol/checking.py's.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.health import HealthCheck
from reconciler.remote.protocol import checking
from reconciler.remote.protocol.checking import HealthResult, parse_results
from reconciler.remote.transport import Transport

SLACK = 15.0  # seconds beyond the checks' own deadline before the command itself times out


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
