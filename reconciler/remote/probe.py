"""Send the probe and read its answer: `gather` runs `protocol.probing.probe` on one server and
returns what `protocol.probing.parse_probe` reads from its output (the wire format, both sides,
is in remote/protocol/probing.py)."""

from __future__ import annotations

from reconciler.core.facts import ProbeSite, ServerFacts
from reconciler.errors import TransportError
from reconciler.remote.protocol import probing
from reconciler.remote.transport import Transport


async def gather(
    transport: Transport, sites: list[ProbeSite], heads: list[tuple[str, str]], *, timeout: float,
    git_timeout: float | None = None,
) -> ServerFacts:
    """Probe `sites` and resolve `heads` on one server, in one command that may take `timeout`;
    each head within `git_timeout` (protocol.heads.head_bounds)."""
    command = probing.probe(sites, heads, timeout, git_timeout)
    result = await transport.run(command.text, stdin=command.stdin, timeout=timeout)
    if not result.ok:
        raise TransportError(f"{transport.name}: probe failed (exit {result.exit_status}): {result.tail(5)}")
    try:
        return probing.parse_probe(result.stdout, sites, heads)
    except TransportError as exc:
        raise TransportError(f"{transport.name}: {exc}") from exc
