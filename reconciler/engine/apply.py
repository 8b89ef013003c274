"""Apply: carry out planned actions on one site through its transport.

Each unit (provision, deploy, activate, prune) is small and writes what it did to the
release's deployment.log and to the store. The site symlink is only ever replaced by
renaming a new link over it (`switch`), for deploy and rollback alike, and nothing is
switched unless every step before it succeeded.

Every remote command is built by a wire protocol (`remote/protocol/`): this module holds no shell text. It picks
the commands, sends them with their stdin, and reads their named exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reconciler.core import wire
from reconciler.core.declarations import SiteDeclaration
from reconciler.core.layout import MANIFEST_NAME, SitePaths
from reconciler.core.manifest import ONCE_DONE, Manifest
from reconciler.core.reasons import DeployReason, DeployTrigger, RequestKind
from reconciler.core.status import DeployStatus, Step, Sync
from reconciler.engine.store import Store, utcnow
from reconciler.errors import LayoutConflict, StepFailed, TransportError
from reconciler.faults import checkpoint
from reconciler.remote import health
from reconciler.remote.lock import Lease
from reconciler.remote.protocol import finishing, locking, seam, site_steps
from reconciler.remote.transport import Result, Transport

log = logging.getLogger(__name__)

LOCAL_LOG_BYTES = 1024 * 1024

# How live progress words a step of a deploy: the short labels `reconcile` has always printed
# (tests/test_progress.py). Any other step shows its Step value.
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


async def _send(ctx: SiteContext, command: seam.Command, timeout: float | None = None,
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


async def _run(ctx: SiteContext, step: Step, command: seam.Command, timeout: float | None = None,
               tied: bool = False, long: bool = False) -> Result:
    """`_send`, and a non-zero exit (a command that could not even start included) is that
    step's failure."""
    result = await _send(ctx, command, timeout, tied, long)
    if not result.ok:
        raise StepFailed(step, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    return result


async def run_step(ctx: SiteContext, command: seam.Command, timeout: float) -> None:
    """Run one command of a deploy outside `deploy` (a site's `script_once`); StepFailed on failure."""
    await _run(ctx, Step.SCRIPT, command, timeout=timeout, long=True)


async def provision(ctx: SiteContext) -> None:
    await _run(ctx, Step.PROVISION, site_steps.provision(ctx.paths))


async def switch(ctx: SiteContext, release: str) -> None:
    try:
        await _run(ctx, Step.SWITCH, site_steps.switch(ctx.paths, release))
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
    result = await _send(ctx, site_steps.reload(ctx.paths, release, command))
    return "" if result.ok else f"reload command failed (exit {result.exit_status})"


async def prune(ctx: SiteContext, releases: tuple[str, ...], release_lock: bool = False) -> None:
    """Remove `releases`; with `release_lock` (the last step under the site's lock) the same
    command releases the lock."""
    if not releases:
        return
    checkpoint("prune")
    lease = ctx.lease if release_lock else None
    command = site_steps.remove_releases(ctx.paths, releases, lease.owner_json if lease is not None else None)
    result = await _send(ctx, command)
    if lease is not None and result.exit_status in (0, seam.EXIT_LOCK_KEPT):
        lease.done(result.exit_status, result.tail(2))
    elif not result.ok:
        raise StepFailed(Step.PRUNE, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    for name in releases:
        row = ctx.store.by_release(ctx.site.domain, name, ctx.server)
        if row is not None:
            ctx.store.update_deployment(row["id"], deployment_path=None)


def _failing_line(log: str) -> str:
    """The last command `sh -x` traced before the script stopped."""
    traced = [line[2:] for line in log.splitlines() if line.startswith("+ ")]
    return traced[-1].strip() if traced else ""


def _save_local_log(ctx: SiteContext, deployment_id: int, text: str) -> Path:
    # Deploy output may quote secrets: owner-only at every level (parents=True would not do that).
    ctx.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = ctx.log_dir / ctx.site.domain
    directory.mkdir(exist_ok=True, mode=0o700)
    path = directory / f"{deployment_id}.log"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


async def check_health(ctx: SiteContext, release: str) -> health.HealthResult | None:
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


async def deploy(ctx: SiteContext, release: str, commit: str, reason: DeployReason | None = None,
                 previous: str | None = None, *, switch_to_it: bool = True, release_lock: bool = False,
                 once: str = "") -> Outcome:
    """Build `commit` into a new release. Returns the outcome; raises TransportError when the
    server went away (a temporary problem). `reason` (the rollout's) is the history's trigger
    unless an operator's request (ctx.trigger) asked for this build. Without `switch_to_it` it
    stops once the release is built and recorded a success: the switch is the executor's
    (engine/executor.py), on every server at once; `once` is the manifest's run-once state
    (`Manifest.once`: "pending" for a site with `script_once`). With `switch_to_it` (a fleet of
    one with no run-once step) the finishing command switches and reloads too; what follows a
    switch (health check, switch back, history) is still `switching.after_switch`. With
    `release_lock` (nothing follows under the site's lock) the finishing command releases it.

    Round trips (issue 15): the claim rides in the tied build command (clone, shared links), so a
    deploy is the lock, the build, the script, and the finish (record, switch, reload, log,
    unlock); a prune after it is one more, which releases the lock instead."""
    site, paths, store = ctx.site, ctx.paths, ctx.store
    ref = site.ref
    trigger: DeployTrigger | None = ctx.trigger or reason
    started = time.monotonic()
    # `branch` of the manifest and of the row: the branch, or `tag <name>` / `commit <sha>` (SiteRef.record).
    base = Manifest(commit, ref.record, site.repository, site.build_key, DeployStatus.UPDATING,
                    utcnow(), "", ctx.declarations_commit or "", once=once)
    deployment_id = store.start_deployment(
        site=site.domain, server=ctx.server, release=release, status=DeployStatus.PENDING, commit_sha=commit,
        branch=ref.record, repository=site.repository, build_key=site.build_key,
        deployment_script=site.script, deployment_path=paths.release(release),
        log_file_path=paths.log(release), declarations_commit=ctx.declarations_commit,
        started_at=base.started_at, transient=0, trigger=trigger, requested_by=ctx.requested_by,
        once=once or None,
    )
    store.update_site(site.domain, server=site.server, base_path=site.base_path, sync=Sync.PROGRESSING,
                      message=f"deploying {commit[:12]} as {release}")
    script = site.script if site.script.strip() else None
    claimed = False
    stage = Step.CLAIM  # the step under way: named when the deploy is interrupted or aborted
    ctx.step(f"deploy {release}")
    by = f", asked by {ctx.requested_by}" if ctx.requested_by else ""
    if reason == DeployReason.TAG_MOVED:
        log.warning("%s: %s moved: it now names %s (the live release %s was built from another commit); "
                    "following it", site.domain, ref.describe(), commit[:12], previous or "-")
    log.info("%s: deploying %s as release %s on %s (%s%s)", site.domain, commit[:12], release, site.server,
             trigger or "desired state", by)
    lease = ctx.lease
    try:
        header = f"==> reconciler: {site.domain} release {release}, {ref.describe()} @ {commit}"
        # The script travels now and waits in the release for its step: on stdin of the claim, or
        # already in the lock (staged when it was taken), so the claim can ride in the build.
        in_lock = script is not None and lease is not None and lease.script_staged
        claim = site_steps.claim_release(paths, release, base.to_json(), header, script, site.shared,
                                    script_in_lock=in_lock)
        # The script itself never rides in a command line (other users may read those on the server).
        batched = site_steps.claim_fits(claim) and (script is None or in_lock)
        if not batched:
            await _run(ctx, Step.CLAIM, claim)
        # From here a stop removes the release (`_abort`): a claim in flight is as good as made.
        claimed = True
        stage = Step.CLONE
        ctx.step(stage)
        store.update_deployment(deployment_id, status=DeployStatus.UPDATING)
        checkpoint("clone")
        # A branch site's release is on its branch; a tag or commit site's is detached at the commit.
        on_branch = ref.name if ref.kind == "branch" else None
        # Claim (when it fits), clone and shared links: one round trip, no answer needed in between.
        built = await _send(ctx, site_steps.build_release(paths, site.repository, on_branch, commit, release,
                                                     claim if batched else None),
                            timeout=ctx.deploy_timeout, tied=True, long=True)
        if not built.ok:
            failed_step = Step.CLONE
            if batched and built.exit_status == seam.EXIT_CLAIM:
                failed_step, claimed = Step.CLAIM, False  # the directory is not ours: never removed
            elif built.exit_status == seam.EXIT_SHARED:
                failed_step = Step.SHARED
            raise StepFailed(failed_step, built.exit_status, built.tail(), built.tail(3).replace("\n", " | "))
        checkpoint("after-build")
        info = wire.commit_info(built.stdout)
        base = dataclasses.replace(base, author=info.author, subject=info.subject)
        store.update_deployment(deployment_id, commit_author=info.author, commit_subject=info.subject)
        stage = Step.SCRIPT
        ctx.step(stage)
        checkpoint("script")
        if script is not None:
            env = {"RECONCILER_DOMAIN": site.domain, "RECONCILER_RELEASE": release,
                   "RECONCILER_COMMIT": commit, "RECONCILER_BRANCH": site.branch or ""}
            await _run(ctx, Step.SCRIPT, site_steps.run_script(paths, release, env, trace=site.trace),
                       timeout=ctx.deploy_timeout, tied=True, long=True)
        stage = Step.RECORD
        done = Manifest(**{**base.__dict__, "status": DeployStatus.SUCCESS, "completed_at": utcnow()})
        checkpoint("before-switch")
        if not switch_to_it or (ctx.still_desired is not None and not ctx.still_desired()):
            # Built, but not switched here: a good release that a later pass (or phase 2) activates.
            await _run(ctx, Step.RECORD, site_steps.write_manifest(paths, release, done.to_json()))
            if not switch_to_it:
                return await _built(ctx, deployment_id, release, started, done)
            return await _superseded(ctx, deployment_id, release, started, done.completed_at)
        # A stop request must not interrupt a switch half-way through the bookkeeping:
        # the switch and reload finish, then the cancellation is honoured.
        stage = Step.SWITCH
        ctx.step(stage)
        # Nothing else to do under the lock (no prune, no health check after): the finish releases it.
        unlock = lease if release_lock and site.health is None else None
        finishing = asyncio.ensure_future(_finish(ctx, release, done, unlock))
        try:
            warning, text = await asyncio.shield(finishing)
            checkpoint("after-switch")
        except asyncio.CancelledError:
            await finishing
            raise
    except asyncio.CancelledError:
        if claimed and stage != Step.SWITCH:
            await _abort(ctx, deployment_id, release, stage, started)
        raise
    except (StepFailed, LayoutConflict) as exc:
        message = str(exc)
        text = await _fetch_log(ctx, release) if claimed else ""
        if isinstance(exc, StepFailed) and exc.step == Step.SCRIPT:
            line = _failing_line(text)
            message = f"deploy script failed (exit {exc.exit_status})" + (f" at: {line}" if line else "")
        elif isinstance(exc, StepFailed) and exc.step == Step.CLAIM:
            message = f"cannot create release directory {paths.release(release)}: {exc.detail}"
        if claimed:
            failed = Manifest(**{**base.__dict__, "status": DeployStatus.FAILED, "completed_at": utcnow(),
                                 "message": message[:500]})
            note = f"==> failed: {message}"
            await _send(ctx, site_steps.record_failure(paths, release, failed.to_json(), note))
            text += note + "\n"
        local = _save_local_log(ctx, deployment_id, text or message + "\n")
        store.update_deployment(
            deployment_id, status=DeployStatus.FAILED, message=message, completed_at=utcnow(),
            duration_ms=int((time.monotonic() - started) * 1000), local_log=str(local),
            exit_status=exc.exit_status if isinstance(exc, StepFailed) else None,
            deployment_path=paths.release(release) if claimed else None,
        )
        return Outcome(False, message)
    except TransportError as exc:
        store.update_deployment(
            deployment_id, status=DeployStatus.FAILED, transient=1, completed_at=utcnow(),
            message=f"interrupted during {stage}: {exc}",
            duration_ms=int((time.monotonic() - started) * 1000),
        )
        raise
    local = _save_local_log(ctx, deployment_id, text)
    store.update_deployment(
        deployment_id, status=DeployStatus.SUCCESS, completed_at=done.completed_at, local_log=str(local),
        duration_ms=int((time.monotonic() - started) * 1000), message=warning,
    )
    store.update_site(
        site.domain, active_deployment_id=deployment_id, active_release=release,
        active_commit=commit, last_deployment_sha=commit, last_deployed_at=done.completed_at,
    )
    return Outcome(True, warning=warning, manifest=done.to_json())


async def relink(ctx: SiteContext, release: str, entries: tuple[str, ...]) -> None:
    """Put back shared links of the live release that are gone or were replaced (drift)."""
    await _run(ctx, Step.SHARED, site_steps.link_shared(ctx.paths, release, entries))


async def record_once_done(ctx: SiteContext, release: str, manifest_json: str) -> None:
    """The run-once step succeeded: the release's manifest says so (`once: done`), so it may go
    live and be rolled back to."""
    await _run(ctx, Step.RECORD, site_steps.record_manifest(ctx.paths, release, manifest_json, "==> script_once done"))
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
        text = await _fetch_log(ctx, release)
    except TransportError:
        return
    local = _save_local_log(ctx, row["id"], text)
    ctx.store.update_deployment(row["id"], local_log=str(local))


async def mark_failed(ctx: SiteContext, release: str, manifest_json: str, message: str) -> None:
    """Record an existing release as failed, on the server (its manifest) and in the store."""
    await _run(ctx, Step.RECORD, site_steps.record_failure(ctx.paths, release, manifest_json, f"==> {message}"))
    row = ctx.store.by_release(ctx.site.domain, release, ctx.server)
    if row is not None:
        ctx.store.update_deployment(row["id"], status=DeployStatus.FAILED, message=message)


async def _finish(ctx: SiteContext, release: str, done: Manifest, lease: Lease | None) -> tuple[str, str]:
    """Record the release's success, switch to it, reload and read its log, in one round trip
    (finishing.finish_release), releasing the lock too when `lease` says so. Returns the reload's
    warning ("" when all went well) and the log."""
    command = finishing.finish_release(ctx.paths, release, done.to_json(), ctx.site.reload_command or None,
                                   lease.owner_json if lease is not None else None, LOCAL_LOG_BYTES)
    result = await _send(ctx, command)
    if result.exit_status == seam.EXIT_RECORD:
        raise StepFailed(Step.RECORD, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    if result.exit_status == seam.EXIT_NOT_A_SYMLINK:
        raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it")
    if not result.ok:
        raise StepFailed(Step.SWITCH, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    try:
        report = wire.finish_report(result.stdout, finishing.FINISH_MARK)
    except wire.WireError as exc:
        # Switched (exit 0), but the report is unreadable: the lock is released the usual way.
        log.warning("%s: %s", ctx.site.domain, exc)
        return "", result.stdout
    if lease is not None:
        lease.done(report.unlock_exit)
    return ("" if report.reload_exit == 0 else f"reload command failed (exit {report.reload_exit})"), report.log


async def _abort(ctx: SiteContext, deployment_id: int, release: str, stage: Step, started: float) -> None:
    """The reconciler is stopping mid-build: keep the output so far (a local copy), remove the
    half-built release (it was never live) and record the deployment as interrupted, so the next
    start builds it again; the site row says so instead of "deploying" until then."""
    message = f"aborted during {stage}: the reconciler was stopping"
    text = ""
    with contextlib.suppress(TransportError, TimeoutError, OSError):
        text = await asyncio.wait_for(asyncio.shield(_fetch_log(ctx, release)), 10)
    local = _save_local_log(ctx, deployment_id, text + f"==> {message}\n")
    with contextlib.suppress(TransportError, TimeoutError, OSError):
        await asyncio.wait_for(asyncio.shield(_send(ctx, site_steps.remove_releases(ctx.paths, [release]), 10)), 15)
    ctx.store.update_deployment(
        deployment_id, status=DeployStatus.FAILED, transient=1, completed_at=utcnow(), deployment_path=None,
        message=message, local_log=str(local), duration_ms=int((time.monotonic() - started) * 1000))
    ctx.store.update_site(ctx.site.domain, sync=Sync.OUT_OF_SYNC,
                          message=f"deploy of {release} {message}; it is built again at the next start")


async def _built(ctx: SiteContext, deployment_id: int, release: str, started: float, done: Manifest) -> Outcome:
    """Built and recorded a success, not (yet) live: the switch is the executor's."""
    text = await _fetch_log(ctx, release)
    local = _save_local_log(ctx, deployment_id, text)
    ctx.store.update_deployment(deployment_id, status=DeployStatus.SUCCESS, completed_at=done.completed_at,
                                local_log=str(local), duration_ms=int((time.monotonic() - started) * 1000))
    return Outcome(True, manifest=done.to_json())


async def _superseded(ctx: SiteContext, deployment_id: int, release: str, started: float, completed: str) -> Outcome:
    message = "a newer declaration landed during the build; not switched"
    text = await _fetch_log(ctx, release)
    local = _save_local_log(ctx, deployment_id, text + f"==> {message}\n")
    ctx.store.update_deployment(deployment_id, status=DeployStatus.SUCCESS, completed_at=completed,
                                local_log=str(local), duration_ms=int((time.monotonic() - started) * 1000),
                                message=message)
    return Outcome(True, message, superseded=True)


async def _fetch_log(ctx: SiteContext, release: str) -> str:
    result = await _send(ctx, site_steps.tail_log(ctx.paths.log(release), LOCAL_LOG_BYTES))
    return result.stdout


__all__ = ["MANIFEST_NAME", "Outcome", "SiteContext", "deploy", "provision", "prune", "switch"]
