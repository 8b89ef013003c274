"""`reconciler doctor [SERVER]`: check what each server (or SERVER) needs for its declared
sites and say what is missing, with the fix. One command per server (remote/doctor.py); exit 0
when nothing is missing, 1 when something is (an unreachable server included), 2 for usage."""

from __future__ import annotations

import argparse
import asyncio

from reconciler.cli.applied import applied
from reconciler.cli.invocation import Invocation
from reconciler.core import wire
from reconciler.core.declarations import SiteDeclaration
from reconciler.engine.workbench import ssh_options
from reconciler.errors import ReconcilerError
from reconciler.remote.doctor import Finding, examine, explain, requirements
from reconciler.remote.transport.pool import TransportPool


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    decls = applied(invocation)
    servers: dict[str, list[SiteDeclaration]] = {}
    for site in decls.sites.values():
        for server in site.targets:
            servers.setdefault(server, []).append(site)
    if args.server is not None:
        # A server no site names yet still gets the basics: check a new server before declaring.
        servers = {args.server: servers.get(args.server, [])}
    if not servers:
        print("doctor: no site is declared on any server; name one: reconciler doctor SERVER")
        return 0
    reports = asyncio.run(_examine_all(invocation, servers))
    missing = False
    for server in sorted(servers):
        text, server_missing = reports[server]
        print(text)
        missing = missing or server_missing
    return 1 if missing else 0


async def _examine_all(invocation: Invocation,
                       servers: dict[str, list[SiteDeclaration]]) -> dict[str, tuple[str, bool]]:
    settings = invocation.settings
    pool = TransportPool(ssh_options(settings), allow_local=settings.allow_local)
    try:
        done = await asyncio.gather(*(_examine(pool, server, sites, settings.command_timeout)
                                      for server, sites in servers.items()))
    finally:
        await pool.close()
    return dict(zip(servers, done, strict=True))


async def _examine(pool: TransportPool, server: str, sites: list[SiteDeclaration],
                   timeout: float) -> tuple[str, bool]:
    """The report of one server, and whether anything is missing there."""
    needs = requirements(sites)
    try:
        findings = await examine(pool.get(server), needs, timeout)
    except ReconcilerError as exc:
        return (f"{server}: cannot check: {wire.display(str(exc), 400)}\n"
                "  fix: the reconciler's key in the deploy user's authorized_keys, the server's host key in "
                "known_hosts (see `reconciler --help` and docs/operations/prerequisites.md)"), True
    return _report(server, sites, findings), any(not f.ok for f in findings)


def _report(server: str, sites: list[SiteDeclaration], findings: list[Finding]) -> str:
    missing = [f for f in findings if not f.ok]
    sites_said = f"{len(sites)} site(s)" if sites else "no site declared on it: the basics only"
    head = (f"{server}: {len(missing)} of {len(findings)} missing ({sites_said})" if missing
            else f"{server}: all {len(findings)} checks passed ({sites_said})")
    lines = [head]
    width = max(len(f.requirement.what) for f in findings)
    for finding in findings:
        need = finding.requirement
        if finding.ok:
            lines.append(f"  ok       {need.what:<{width}}  {finding.answer.detail}")
            continue
        lines.append(f"  MISSING  {need.what:<{width}}  {explain(finding)}")
        lines.append(f"           why: {need.why}")
        lines.append(f"           fix: {need.fix}")
    return "\n".join(lines)
