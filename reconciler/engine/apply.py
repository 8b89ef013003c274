"""Apply: the commands a rollout sends to one server of a site, one function each (provision,
switch, reload, prune, relink, record a run-once step or a failure, read a log, a health check),
and how a command is sent under the site's lock. A build is `engine/building.py`'s.

Each unit is small and writes what it did to the release's deployment.log and to the store. The
site symlink is only ever replaced by renaming a new link over it (`switch`), and nothing is
switched unless every step before it succeeded. Every remote command is built by a wire protocol
(`remote/protocol/`): this module holds no shell text. It picks the commands, sends them with
their stdin, and reads their named exit codes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.core.declarations import SiteDeclaration
from reconciler.core.layout import MANIFEST_NAME, SitePaths
from reconciler.core.manifest import ONCE_DONE
from reconciler.core.reasons import RequestKind
from reconciler.core.status import DeployStatus, Step
from reconciler.engine.store import Store
from reconciler.errors import LayoutConflict, StepFailed, TransportError
from reconciler.faults import checkpoint
from reconciler.remote import health
from reconciler.remote.lock import Lease
from reconciler.remote.protocol import checking, locking, seam, site_steps
from reconciler.remote.transport import Result, Transport

log = logging.getLogger(__name__)

LOCAL_LOG_BYTES = 1024 * 1024

# How live progress words a step of a deploy: the short labels `reconcile` has always printed
# (tests/cli/test_progress.py). Any other step shows its Step value.
_PROGRESS: dict[Step, str] = {Step.SHARED: "link shared", Step.SCRIPT: "script"}


@dataclass
class SiteContext:
    transport: Transport
    site: SiteDeclaration
    store: Store
    log_dir: Path
    command_timeout: float
    deploy_timeout: float
    declarations_commit: str | None = None
    # Asked right before a switch: False when a newer declaration (e.g. a pin) landed meanwhile.
    still_desired: Callable[[], bool] | None = None
    # Told each step as it starts (live progress of `reconcile`).
    progress: Callable[[str], None] | None = None
    # What asked for a deployment started now, and who (`retry`/`redeploy` by an operator).
    trigger: RequestKind | None = None
    requested_by: str | None = None
    # Told how long each health check took (the daemon's metrics).
    on_health_check: Callable[[float], None] | None = None
    # The server this context works on: one of the site's targets ("" = the site's only server).
    target: str = ""
    # The site's lock as held now: the last command under it may release it (remote/lock.py).
    lease: Lease | None = None

    @property
    def server(self) -> str:
        return self.target or self.site.server

    def step(self, name: Step | str) -> None:
        """Report a step as it starts: a Step of a deploy, or an action's own description."""
        if self.progress is not None:
            self.progress(_PROGRESS.get(name, name) if isinstance(name, Step) else name)

    @property
    def paths(self) -> SitePaths:
        return SitePaths(self.site.base_path, self.site.domain)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""
    warning: str = ""
    superseded: bool = False  # built fine, but no longer desired: left unswitched
    manifest: str = ""  # the built release's manifest (JSON), as written on the server


async def send(ctx: SiteContext, command: seam.Command, timeout: float | None = None,
                tied: bool = False, long: bool = False) -> Result:
    """Run one command built by a wire protocol (`remote/protocol/`), with its stdin. A `long` step (the build, a
    script: up to `deploy_timeout`) under the site's lock refreshes the lock itself while it
    runs (`Lease.beat`, remote/lock.py): a legitimate deploy's lock never looks stale."""
    seconds = timeout or ctx.command_timeout
    if not long or ctx.lease is None:
        return await ctx.transport.run(command.text, stdin=command.stdin, timeout=seconds, tied=tied)
    with ctx.lease.beat(seconds) as beat:
        command = locking.beating(command, beat)
        return await ctx.transport.run(command.text, stdin=command.stdin, timeout=seconds, tied=tied)


async def run(ctx: SiteContext, step: Step, command: seam.Command, timeout: float | None = None,
               tied: bool = False, long: bool = False) -> Result:
    """`send`, and a non-zero exit (a command that could not even start included) is that
    step's failure."""
    result = await send(ctx, command, timeout, tied, long)
    if not result.ok:
        raise StepFailed(step, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    return result


async def run_step(ctx: SiteContext, command: seam.Command, timeout: float) -> None:
    """Run one command of a deploy outside `deploy` (a site's `script_once`); StepFailed on failure."""
    await run(ctx, Step.SCRIPT, command, timeout=timeout, long=True)


async def provision(ctx: SiteContext) -> None:
    await run(ctx, Step.PROVISION, site_steps.provision(ctx.paths))


async def switch(ctx: SiteContext, release: str) -> None:
    try:
        await run(ctx, Step.SWITCH, site_steps.switch(ctx.paths, release))
    except StepFailed as exc:
        if exc.exit_status == seam.EXIT_NOT_A_SYMLINK:
            raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it") from exc
        raise


async def reload(ctx: SiteContext, release: str) -> str:
    """Run the reload command after a switch. Returns a warning, or "" when all went well.
    The new release is already live, so a failed reload degrades health but does not undo it."""
    command = ctx.site.reload_command
    if not command:
        return ""
    result = await send(ctx, site_steps.reload(ctx.paths, release, command))
    return "" if result.ok else f"reload command failed (exit {result.exit_status})"


async def prune(ctx: SiteContext, releases: tuple[str, ...], release_lock: bool = False) -> None:
    """Remove `releases`; with `release_lock` (the last step under the site's lock) the same
    command releases the lock."""
    if not releases:
        return
    checkpoint("prune")
    lease = ctx.lease if release_lock else None
    command = site_steps.remove_releases(ctx.paths, releases, lease.owner_json if lease is not None else None)
    result = await send(ctx, command)
    if lease is not None and result.exit_status in (0, seam.EXIT_LOCK_KEPT):
        lease.done(result.exit_status, result.tail(2))
    elif not result.ok:
        raise StepFailed(Step.PRUNE, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    for name in releases:
        row = ctx.store.by_release(ctx.site.domain, name, ctx.server)
        if row is not None:
            ctx.store.update_deployment(row["id"], deployment_path=None)


def save_local_log(ctx: SiteContext, deployment_id: int, text: str) -> Path:
    # Deploy output may quote secrets: owner-only at every level (parents=True would not do that).
    ctx.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = ctx.log_dir / ctx.site.domain
    directory.mkdir(exist_ok=True, mode=0o700)
    path = directory / f"{deployment_id}.log"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


async def check_health(ctx: SiteContext, release: str) -> checking.HealthResult | None:
    """Run the site's `[health]` check against `release` (live now); None without one."""
    check = ctx.site.health
    if check is None:
        return None
    ctx.step("health check")
    started = time.monotonic()
    (result,) = await health.run(ctx.transport, [health.Probe(ctx.paths.release(release), ctx.site.domain, check)])
    if ctx.on_health_check is not None:
        ctx.on_health_check(time.monotonic() - started)
    return result


async def write_env(ctx: SiteContext) -> None:
    """Write the site's decrypted env file to shared/.env (atomically, 0600; content on stdin)."""
    env = ctx.site.env
    assert env is not None
    await run(ctx, Step.SHARED, site_steps.write_env(ctx.paths, env.text))


async def relink(ctx: SiteContext, release: str, entries: tuple[str, ...]) -> None:
    """Put back shared links of the live release that are gone or were replaced (drift)."""
    await run(ctx, Step.SHARED, site_steps.link_shared(ctx.paths, release, entries))


async def record_once_done(ctx: SiteContext, release: str, manifest_json: str) -> None:
    """The run-once step succeeded: the release's manifest says so (`once: done`), so it may go
    live and be rolled back to."""
    await run(ctx, Step.RECORD, site_steps.record_manifest(ctx.paths, release, manifest_json, "==> script_once done"))
    row = ctx.store.by_release(ctx.site.domain, release, ctx.server)
    if row is not None:
        ctx.store.update_deployment(row["id"], once=ONCE_DONE)


async def keep_log(ctx: SiteContext, release: str) -> None:
    """Copy the release's log from the server again (it grew after the build: `script_once`'s
    output), so `logs` and history show it; best effort: the server keeps the original."""
    row = ctx.store.by_release(ctx.site.domain, release, ctx.server)
    if row is None:
        return
    try:
        text = await fetch_log(ctx, release)
    except TransportError:
        return
    local = save_local_log(ctx, row["id"], text)
    ctx.store.update_deployment(row["id"], local_log=str(local))


async def mark_failed(ctx: SiteContext, release: str, manifest_json: str, message: str) -> None:
    """Record an existing release as failed, on the server (its manifest) and in the store."""
    await run(ctx, Step.RECORD, site_steps.record_failure(ctx.paths, release, manifest_json, f"==> {message}"))
    row = ctx.store.by_release(ctx.site.domain, release, ctx.server)
    if row is not None:
        ctx.store.update_deployment(row["id"], status=DeployStatus.FAILED, message=message)


async def mark_succeeded(ctx: SiteContext, release: str, manifest_json: str) -> None:
    """Record an existing release as successful again (it failed only its health check, and
    passed it when checked again), on the server (its manifest) and in the store."""
    await run(ctx, Step.RECORD, site_steps.write_manifest(ctx.paths, release, manifest_json))
    row = ctx.store.by_release(ctx.site.domain, release, ctx.server)
    if row is not None:
        ctx.store.update_deployment(row["id"], status=DeployStatus.SUCCESS, message="", forgiven=0)


async def fetch_log(ctx: SiteContext, release: str) -> str:
    result = await send(ctx, site_steps.tail_log(ctx.paths.log(release), LOCAL_LOG_BYTES))
    return result.stdout


__all__ = ["MANIFEST_NAME", "Outcome", "SiteContext", "provision", "prune", "switch"]
