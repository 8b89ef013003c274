"""`reconciler import SERVER... [--base PATH] [--write]`: find the BrokeForge-layout sites on
servers that already run them and print one declaration per site, each pinned to its live
release so the first pass adopts it without deploying (remote/onboarding.py says why); with
`--write`, write them as sites.d/<domain>.toml into the declarations repository's work tree
(never over an existing file) for the operator to review and commit. A site that cannot be read
fully is listed with the reason, never guessed. Exit 0 when every site found was imported (or
already declared), 1 when a site or a server could not be, 2 for usage errors."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from reconciler.cli.invocation import Invocation
from reconciler.core import wire
from reconciler.core.declarations import DEFAULT_BASE_PATH, SITES_DIR
from reconciler.core.site_values import LOCAL_REFUSED, LOCAL_SERVER, check_server
from reconciler.engine.workbench import ssh_options
from reconciler.errors import ConfigError, ReconcilerError
from reconciler.remote.onboarding import Proposal, Refusal, check_base_path, propose, survey
from reconciler.remote.protocol.importing import MAX_SITES, Survey
from reconciler.remote.transport.pool import TransportPool


def handle(invocation: Invocation, args: argparse.Namespace) -> int:
    settings = invocation.settings
    servers = list(dict.fromkeys(args.server))
    for server in servers:
        if why := check_server(server):
            raise ConfigError(f"import: {wire.display(server, 80)!r} is not a server: {why}")
        if server == LOCAL_SERVER and not settings.allow_local:
            raise ConfigError(f"import: {LOCAL_REFUSED}")
    try:
        base = check_base_path(args.base or DEFAULT_BASE_PATH)
    except ValueError as exc:
        raise ConfigError(f"import: --base {exc}") from exc
    sites_dir = _work_tree(invocation) / SITES_DIR if args.write else None
    surveys, unreachable = asyncio.run(_survey_all(invocation, servers, base))
    proposals, refusals = propose(surveys, base)
    for server, why in unreachable.items():
        refusals.append(Refusal("(every site)", (server,), f"cannot read the server: {why}"))
    for server, found in surveys.items():
        if found.no_layout:
            print(f"import: {server}: no {base}/deployments/ directory: no BrokeForge-layout site there")
        if found.more:
            refusals.append(Refusal("(the rest)", (server,), f"more than {MAX_SITES} directories under "
                                    f"{base}/deployments/: only the first {MAX_SITES} were read"))
    if sites_dir is None:
        _print(proposals)
    else:
        _write(sites_dir, proposals)
    if refusals:
        print(f"import: {len(refusals)} site(s) not imported:")
        for refusal in refusals:
            print(f"  {refusal.name} on {', '.join(refusal.servers)}: {refusal.reason}")
    return 1 if refusals else 0


def _work_tree(invocation: Invocation) -> Path:
    """The declarations repository's work tree, where --write puts the files."""
    repo = invocation.settings.repo
    if not isinstance(repo, Path) or not (repo / ".git").exists():
        raise ConfigError(f"import --write needs the declarations repository's work tree (a clone: --repo PATH); "
                          f"{repo} is not one. Without --write the declarations are printed.")
    (repo / SITES_DIR).mkdir(exist_ok=True)
    return repo


async def _survey_all(invocation: Invocation, servers: list[str],
                      base: str) -> tuple[dict[str, Survey], dict[str, str]]:
    settings = invocation.settings
    pool = TransportPool(ssh_options(settings), allow_local=settings.allow_local)
    try:
        done = await asyncio.gather(*(_survey_one(pool, server, base, settings.command_timeout)
                                      for server in servers))
    finally:
        await pool.close()
    surveys = {server: found for server, found in zip(servers, done, strict=True) if isinstance(found, Survey)}
    failed = {server: found for server, found in zip(servers, done, strict=True) if isinstance(found, str)}
    return surveys, failed


async def _survey_one(pool: TransportPool, server: str, base: str, timeout: float) -> Survey | str:
    try:
        return await survey(pool.get(server), base, timeout)
    except ReconcilerError as exc:
        return wire.display(str(exc), 400)


def _print(proposals: list[Proposal]) -> None:
    for proposal in proposals:
        print(f"# --- {proposal.filename}")
        print(proposal.text)


def _write(sites_dir: Path, proposals: list[Proposal]) -> None:
    written, kept = [], []
    for proposal in proposals:
        path = sites_dir / f"{proposal.domain}.toml"
        try:
            # "x": never over a file that exists (a site already declared, or written meanwhile).
            with path.open("x", encoding="utf-8") as file:
                file.write(proposal.text)
        except FileExistsError:
            kept.append(proposal.filename)
            continue
        written.append(proposal.filename)
    for name in written:
        print(f"wrote {name}")
    for name in kept:
        print(f"skipped {name}: it exists (left as it is)")
    if written:
        print("review them, then commit: git add sites.d && git commit -m 'import sites'")
