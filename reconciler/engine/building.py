"""A build: `commit` into a new release directory on one server, in as few round trips as the
steps allow (the claim rides in the build command; the finish records, switches, reloads, reads
the log and may release the lock in one), recorded in the store and the release's manifest as it
goes. A stop mid-build removes the half-built release; a failed step is the release's recorded
failure with its log; a lost connection is a temporary problem (the row says interrupted).

What follows a switch (health check, switch back, history) is `switching.after_switch`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass

from reconciler.core import wire
from reconciler.core.manifest import Manifest
from reconciler.core.reasons import DeployReason, DeployTrigger
from reconciler.core.status import DeployStatus, Step, Sync
from reconciler.engine.apply import LOCAL_LOG_BYTES, Outcome, SiteContext, fetch_log, run, save_local_log, send
from reconciler.engine.store import utcnow
from reconciler.errors import LayoutConflict, StepFailed, TransportError
from reconciler.faults import checkpoint
from reconciler.remote.lock import Lease
from reconciler.remote.protocol import finishing, seam, site_steps

log = logging.getLogger(__name__)


@dataclass
class _Attempt:
    """One build under way: what a failure or a stop at any step must know."""

    ctx: SiteContext
    release: str
    commit: str
    deployment_id: int
    base: Manifest         # the manifest as written so far (`updating`)
    started: float         # time.monotonic() at the start
    stage: Step = Step.CLAIM  # the step under way: named when the build is interrupted or aborted
    claimed: bool = False     # the release directory is ours: a stop removes it
    previous: str | None = None  # the server's live release: `copy_from_previous` copies from it

    def ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


async def deploy(ctx: SiteContext, release: str, commit: str, reason: DeployReason | None = None,
                 previous: str | None = None, *, switch_to_it: bool = True, release_lock: bool = False,
                 once: str = "") -> Outcome:
    """Build `commit` into a new release. Returns the outcome; raises TransportError when the
    server went away (a temporary problem). `reason` (the rollout's) is the history's trigger
    unless an operator's request (ctx.trigger) asked for this build. Without `switch_to_it` it
    stops once the release is built and recorded a success: the switch is the executor's
    (engine/switching.py), on every server at once; `once` is the manifest's run-once state
    (`Manifest.once`: "pending" for the first server of a site with `script_once`). With
    `switch_to_it` (a fleet of one with no run-once step) the finishing command switches and
    reloads too. With `release_lock` (nothing follows under the site's lock) the finishing
    command releases it.

    Round trips: the claim rides in the tied build command (clone, shared links), so a
    deploy is the lock, the build, the script, and the finish (record, switch, reload, log,
    unlock); a prune after it is one more, which releases the lock instead."""
    attempt = _begin(ctx, release, commit, reason, previous, once)
    try:
        await _claim_and_build(attempt)
        await _script(attempt)
        attempt.stage = Step.RECORD
        done = dataclasses.replace(attempt.base, status=DeployStatus.SUCCESS, completed_at=utcnow())
        checkpoint("before-switch")
        if not switch_to_it or (ctx.still_desired is not None and not ctx.still_desired()):
            # Built, but not switched here: a good release that a later step (or pass) switches to.
            await run(ctx, Step.RECORD, site_steps.write_manifest(ctx.paths, release, done.to_json()))
            if not switch_to_it:
                return await _built(attempt, done)
            return await _superseded(attempt, done)
        warning, text = await _switching(attempt, done, release_lock)
    except asyncio.CancelledError:
        if attempt.claimed and attempt.stage != Step.SWITCH:
            await _abort(attempt)
        raise
    except (StepFailed, LayoutConflict) as exc:
        return await _failed(attempt, exc)
    except TransportError as exc:
        ctx.store.update_deployment(attempt.deployment_id, status=DeployStatus.FAILED, transient=1,
                                    completed_at=utcnow(), message=f"interrupted during {attempt.stage}: {exc}",
                                    duration_ms=attempt.ms())
        raise
    return _succeeded(attempt, done, warning, text)


def _begin(ctx: SiteContext, release: str, commit: str, reason: DeployReason | None, previous: str | None,
           once: str) -> _Attempt:
    """The deployment row and the manifest to write, the site `Progressing`, and the log line."""
    site, paths, store = ctx.site, ctx.paths, ctx.store
    ref = site.ref
    trigger: DeployTrigger | None = ctx.trigger or reason
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
    ctx.step(f"deploy {release}")
    by = f", asked by {ctx.requested_by}" if ctx.requested_by else ""
    if reason == DeployReason.TAG_MOVED:
        log.warning("%s: %s moved: it now names %s (the live release %s was built from another commit); "
                    "following it", site.domain, ref.describe(), commit[:12], previous or "-")
    log.info("%s: deploying %s as release %s on %s (%s%s)", site.domain, commit[:12], release, site.server,
             trigger or "desired state", by)
    return _Attempt(ctx, release, commit, deployment_id, base, time.monotonic(), previous=previous)


async def _claim_and_build(attempt: _Attempt) -> None:
    """Claim the release directory, clone, link shared entries, copy `copy_from_previous` from the
    live release: one round trip when the claim's data fits in the build command, else the claim
    first."""
    ctx, release = attempt.ctx, attempt.release
    site, paths = ctx.site, ctx.paths
    ref = site.ref
    script = site.script if site.script.strip() else None
    lease = ctx.lease
    header = f"==> reconciler: {site.domain} release {release}, {ref.describe()} @ {attempt.commit}"
    # The script travels now and waits in the release for its step: on stdin of the claim, or
    # already in the lock (staged when it was taken), so the claim can ride in the build.
    in_lock = script is not None and lease is not None and lease.script_staged
    claim = site_steps.claim_release(paths, release, attempt.base.to_json(), header, script, site.shared,
                                     script_in_lock=in_lock)
    # The script itself never rides in a command line (other users may read those on the server).
    batched = site_steps.claim_fits(claim) and (script is None or in_lock)
    if not batched:
        await run(ctx, Step.CLAIM, claim)
    # From here a stop removes the release (`_abort`): a claim in flight is as good as made.
    attempt.claimed = True
    attempt.stage = Step.CLONE
    ctx.step(attempt.stage)
    ctx.store.update_deployment(attempt.deployment_id, status=DeployStatus.UPDATING)
    checkpoint("clone")
    # A branch site's release is on its branch; a tag or commit site's is detached at the commit.
    on_branch = ref.name if ref.kind == "branch" else None
    built = await send(ctx, site_steps.build_release(paths, site.repository, on_branch, attempt.commit, release,
                                                     claim if batched else None, attempt.previous,
                                                     site.copy_from_previous),
                       timeout=ctx.deploy_timeout, tied=True, long=True)
    if not built.ok:
        failed_step = Step.CLONE
        if batched and built.exit_status == seam.EXIT_CLAIM:
            failed_step, attempt.claimed = Step.CLAIM, False  # the directory is not ours: never removed
        elif built.exit_status == seam.EXIT_SHARED:
            failed_step = Step.SHARED
        elif built.exit_status == seam.EXIT_COPY:
            failed_step = Step.COPY
        raise StepFailed(failed_step, built.exit_status, built.tail(), built.tail(3).replace("\n", " | "))
    checkpoint("after-build")
    info = site_steps.commit_info(built.stdout)
    attempt.base = dataclasses.replace(attempt.base, author=info.author, subject=info.subject)
    ctx.store.update_deployment(attempt.deployment_id, commit_author=info.author, commit_subject=info.subject)


async def _script(attempt: _Attempt) -> None:
    """The staged deploy script, in the release (when the site has one)."""
    ctx, site = attempt.ctx, attempt.ctx.site
    attempt.stage = Step.SCRIPT
    ctx.step(attempt.stage)
    checkpoint("script")
    if site.script.strip():
        env = {"RECONCILER_DOMAIN": site.domain, "RECONCILER_RELEASE": attempt.release,
               "RECONCILER_COMMIT": attempt.commit, "RECONCILER_BRANCH": site.branch or ""}
        await run(ctx, Step.SCRIPT, site_steps.run_script(ctx.paths, attempt.release, env, trace=site.trace),
                  timeout=ctx.deploy_timeout, tied=True, long=True)


async def _switching(attempt: _Attempt, done: Manifest, release_lock: bool) -> tuple[str, str]:
    """The finish: record, switch, reload, read the log (and release the lock when nothing else
    follows under it). A stop request must not interrupt a switch half-way through the
    bookkeeping: the switch and reload finish, then the cancellation is honoured."""
    ctx = attempt.ctx
    attempt.stage = Step.SWITCH
    ctx.step(attempt.stage)
    # Nothing else to do under the lock (no prune, no health check after): the finish releases it.
    unlock = ctx.lease if release_lock and ctx.site.health is None else None
    finish = asyncio.ensure_future(_finish(ctx, attempt.release, done, unlock))
    try:
        warning, text = await asyncio.shield(finish)
        checkpoint("after-switch")
    except asyncio.CancelledError:
        await finish
        raise
    return warning, text


async def _failed(attempt: _Attempt, exc: StepFailed | LayoutConflict) -> Outcome:
    """A step failed: the release's manifest and log say so, and the row (remembered: no hot loop)."""
    ctx, release = attempt.ctx, attempt.release
    message = str(exc)
    text = await fetch_log(ctx, release) if attempt.claimed else ""
    if isinstance(exc, StepFailed) and exc.step == Step.SCRIPT:
        line = _failing_line(text)
        message = f"deploy script failed (exit {exc.exit_status})" + (f" at: {line}" if line else "")
    elif isinstance(exc, StepFailed) and exc.step == Step.CLAIM:
        message = f"cannot create release directory {ctx.paths.release(release)}: {exc.detail}"
    if attempt.claimed:
        failed = dataclasses.replace(attempt.base, status=DeployStatus.FAILED, completed_at=utcnow(),
                                     message=message[:500])
        note = f"==> failed: {message}"
        await send(ctx, site_steps.record_failure(ctx.paths, release, failed.to_json(), note))
        text += note + "\n"
    local = save_local_log(ctx, attempt.deployment_id, text or message + "\n")
    ctx.store.update_deployment(
        attempt.deployment_id, status=DeployStatus.FAILED, message=message, completed_at=utcnow(),
        duration_ms=attempt.ms(), local_log=str(local),
        exit_status=exc.exit_status if isinstance(exc, StepFailed) else None,
        deployment_path=ctx.paths.release(release) if attempt.claimed else None,
    )
    return Outcome(False, message)


def _succeeded(attempt: _Attempt, done: Manifest, warning: str, text: str) -> Outcome:
    ctx = attempt.ctx
    local = save_local_log(ctx, attempt.deployment_id, text)
    ctx.store.update_deployment(attempt.deployment_id, status=DeployStatus.SUCCESS, completed_at=done.completed_at,
                                local_log=str(local), duration_ms=attempt.ms(), message=warning)
    ctx.store.update_site(ctx.site.domain, active_deployment_id=attempt.deployment_id, active_release=attempt.release,
                          active_commit=attempt.commit, last_deployment_sha=attempt.commit,
                          last_deployed_at=done.completed_at)
    return Outcome(True, warning=warning, manifest=done.to_json())


def _failing_line(log: str) -> str:
    """The last command `sh -x` traced before the script stopped."""
    traced = [line[2:] for line in log.splitlines() if line.startswith("+ ")]
    return traced[-1].strip() if traced else ""


async def _finish(ctx: SiteContext, release: str, done: Manifest, lease: Lease | None) -> tuple[str, str]:
    """Record the release's success, switch to it, reload and read its log, in one round trip
    (finishing.finish_release), releasing the lock too when `lease` says so. Returns the reload's
    warning ("" when all went well) and the log."""
    command = finishing.finish_release(ctx.paths, release, done.to_json(), ctx.site.reload_command or None,
                                       lease.owner_json if lease is not None else None, LOCAL_LOG_BYTES)
    result = await send(ctx, command)
    if result.exit_status == seam.EXIT_RECORD:
        raise StepFailed(Step.RECORD, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    if result.exit_status == seam.EXIT_NOT_A_SYMLINK:
        raise LayoutConflict(f"{ctx.paths.site_link} is not a symlink; refusing to replace it")
    if not result.ok:
        raise StepFailed(Step.SWITCH, result.exit_status, result.tail(), result.tail(3).replace("\n", " | "))
    try:
        report = finishing.finish_report(result.stdout)
    except wire.WireError as exc:
        # Switched (exit 0), but the report is unreadable: the lock is released the usual way.
        log.warning("%s: %s", ctx.site.domain, exc)
        return "", result.stdout
    if lease is not None:
        lease.done(report.unlock_exit)
    return ("" if report.reload_exit == 0 else f"reload command failed (exit {report.reload_exit})"), report.log


async def _abort(attempt: _Attempt) -> None:
    """The reconciler is stopping mid-build: keep the output so far (a local copy), remove the
    half-built release (it was never live) and record the deployment as interrupted, so the next
    start builds it again; the site row says so instead of "deploying" until then."""
    ctx, release = attempt.ctx, attempt.release
    message = f"aborted during {attempt.stage}: the reconciler was stopping"
    text = ""
    with contextlib.suppress(TransportError, TimeoutError, OSError):
        text = await asyncio.wait_for(asyncio.shield(fetch_log(ctx, release)), 10)
    local = save_local_log(ctx, attempt.deployment_id, text + f"==> {message}\n")
    with contextlib.suppress(TransportError, TimeoutError, OSError):
        await asyncio.wait_for(asyncio.shield(send(ctx, site_steps.remove_releases(ctx.paths, [release]), 10)), 15)
    ctx.store.update_deployment(
        attempt.deployment_id, status=DeployStatus.FAILED, transient=1, completed_at=utcnow(), deployment_path=None,
        message=message, local_log=str(local), duration_ms=attempt.ms())
    ctx.store.update_site(ctx.site.domain, sync=Sync.OUT_OF_SYNC,
                          message=f"deploy of {release} {message}; it is built again at the next start")


async def _built(attempt: _Attempt, done: Manifest) -> Outcome:
    """Built and recorded a success, not (yet) live: the switch is the executor's."""
    ctx = attempt.ctx
    text = await fetch_log(ctx, attempt.release)
    local = save_local_log(ctx, attempt.deployment_id, text)
    ctx.store.update_deployment(attempt.deployment_id, status=DeployStatus.SUCCESS, completed_at=done.completed_at,
                                local_log=str(local), duration_ms=attempt.ms())
    return Outcome(True, manifest=done.to_json())


async def _superseded(attempt: _Attempt, done: Manifest) -> Outcome:
    ctx = attempt.ctx
    message = "a newer declaration landed during the build; not switched"
    text = await fetch_log(ctx, attempt.release)
    local = save_local_log(ctx, attempt.deployment_id, text + f"==> {message}\n")
    ctx.store.update_deployment(attempt.deployment_id, status=DeployStatus.SUCCESS, completed_at=done.completed_at,
                                local_log=str(local), duration_ms=attempt.ms(), message=message)
    return Outcome(True, message, superseded=True)
