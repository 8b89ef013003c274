"""Faults injected FOR REAL (DESIGN "Testing"), against real processes over a real sshd:

- `python -m reconciler reconcile` SIGKILLs itself at each step of a deploy (RECONCILER_FAULT);
- the SSH server is killed in the middle of a deploy script;
- the base path is a tiny tmpfs that fills up during a clone;
- the server's layout holds junk: corrupt or missing manifests, a release-shaped FILE, stray
  directories, a real directory where the site symlink belongs, a dangling site symlink.

After every fault: the site path still resolves to a good release (sampled while the fault
happens), shared data is intact byte for byte, and the next normal pass converges or refuses
clearly. The session ends by printing a table of cases -> outcome (`pytest -s` shows it).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.faults.support import FaultTable, Fleet, World, make_bulky_app
from tests.support import LinkSampler, app_commit, wait_until
from tests.support.sshd import SshServer

SIGKILLED = -9


@pytest.fixture(name="fault_table", scope="session")
def fault_table_fixture() -> Iterator[FaultTable]:
    table = FaultTable()
    yield table
    if table.rows:
        table.publish()


@pytest.fixture(name="bulky_app", scope="session")
def bulky_app_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A template app repo with some history (copied per case): clones take a moment."""
    return make_bulky_app(tmp_path_factory.mktemp("bulky") / "app")


def _kill_key(case: KillCase) -> str:
    return "kill-" + case.fault.split(":")[0] + ("-mid" if ":" in case.fault else "")


@pytest.fixture(name="fleet", scope="session")
def fleet_fixture(tmp_path_factory: pytest.TempPathFactory, sshd_session: SshServer, bulky_app: Path) -> Fleet:
    """Every kill and layout case as its own site (own app repo, own base path), set up by two
    concurrent passes: a good release live (and a second one where a case needs history)."""
    os.environ.pop("RECONCILER_FAULT", None)
    fleet = Fleet.create(tmp_path_factory.mktemp("fleet"), sshd_session)
    second: list[World] = []
    for case in KILL_CASES:
        app = None
        if case.bulky:
            app = fleet.tmp / f"{_kill_key(case)}-app"
            shutil.copytree(bulky_app, app, symlinks=True)
        slow = fleet.tmp / f"{_kill_key(case)}.slow"
        world = fleet.add(_kill_key(case), app=app, keep=case.keep, script=case.script.format(slow=slow))
        if case.prior > 1:
            second.append(world)
    for layout in LAYOUT_CASES:
        second.append(fleet.add(layout.key, keep=1))
    fleet.converge_all()
    for world in second:
        app_commit(world.app, "v2")
    fleet.converge_all()
    fleet.go_remote()
    return fleet


@pytest.fixture(autouse=True)
def _no_inherited_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process setup passes must never see a fault spec (the checkpoint reads os.environ).
    monkeypatch.delenv("RECONCILER_FAULT", raising=False)
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)


class Holder:
    """Lets the case recorder find the world even when setup fails half-way."""

    world: World | None = None

    def __call__(self) -> World | None:
        return self.world


# -- assertions shared by the cases ----------------------------------------------------------------


def assert_served_by_good_release(world: World, allowed: set[str]) -> str:
    live = world.site.active()
    assert live is not None, "site symlink missing"
    assert live in allowed, f"site points at {live}, expected one of {sorted(allowed)}\n{world.diagnostics()}"
    assert world.site_resolves(), f"site symlink {world.site.link} does not resolve"
    status = world.manifest_status(live)
    assert status == "success", f"live release {live} has manifest status {status!r}"
    assert (world.site.link / "public" / "index.php").is_file(), "live release has no public/index.php"
    return live


def assert_shared_intact(world: World) -> None:
    problems = world.data_problems()
    assert not problems, f"shared data damaged: {problems}"


def assert_converged(world: World, done: subprocess.CompletedProcess[str], head: str) -> dict[str, Any]:
    """Exit 0, Synced, the head commit live, nothing half-built, no lock, no open history rows.
    Every violated condition is reported at once (a bug report wants the whole picture)."""
    assert done.returncode == 0, f"reconcile exit {done.returncode}:\n{done.stdout}{done.stderr}\n{world.diagnostics()}"
    problems = []
    status = world.status()
    if status["sync"] != "Synced":
        problems.append(f"status sync {status['sync']!r} ({status['message']})")
    if world.site.live_commit() != head:
        problems.append(f"live commit is not the app head {head[:12]}")
    if status["active_commit"] != head:
        problems.append(f"status active_commit {str(status['active_commit'])[:12]} != head {head[:12]}")
    if world.updating_releases():
        problems.append(f"half-built (manifest 'updating') releases left: {world.updating_releases()}")
    if world.lock_present():
        problems.append("the site lock directory is still on the server after a clean pass")
    stuck = [(h["id"], h["release"], h["status"]) for h in world.history() if h["status"] in ("pending", "updating")]
    if stuck:
        problems.append(f"history still has open deployments: {stuck}")
    assert not problems, "; ".join(problems) + "\n" + world.diagnostics()
    return status


def sampled(world: World) -> LinkSampler:
    return LinkSampler(world.site.link, period=0.002)


def assert_never_unresolved(sampler: LinkSampler) -> None:
    assert sampler.samples > 0, "the link sampler took no samples"
    assert sampler.failures == [], f"site path failed to resolve {len(sampler.failures)}x: {sampler.failures[:3]}"


# -- 1. kill -9 at every step of a deploy ------------------------------------------------------------


@dataclass(frozen=True)
class KillCase:
    fault: str
    expect_live: str  # "old" | "new": which release serves right after the kill
    script: str = ""
    keep: int = 14
    prior: int = 1  # releases deployed before the faulty one
    bulky: bool = False
    # What the interrupted deployment must end up as in history after the recovery pass.
    interrupted_status: str = "failed"


@dataclass(frozen=True)
class LayoutCase:
    name: str
    key: str  # the case's site: {key}.faults.example
    new_commit: bool = True


LAYOUT_CASES = [
    LayoutCase("corrupt manifest in an old release", "layout-corrupt"),
    LayoutCase("missing manifest in an old release", "layout-nomanifest"),
    LayoutCase("release-shaped FILE and junk dirs", "layout-junk"),
    LayoutCase("site path is a real directory", "layout-realdir"),
    LayoutCase("dangling site symlink", "layout-dangling"),
    LayoutCase("dangling site symlink, head unchanged", "layout-dangling-same", new_commit=False),
]

# Slow only while the case's `slow` marker exists: setup and recovery builds stay quick.
SLOW_SCRIPT = "touch script-started\nif [ -e {slow} ]; then sleep 1; fi\necho script-done > script-done\n"
KILL_CASES = [
    KillCase("after-build", "old"),
    KillCase("clone:0.05", "old", bulky=True),
    KillCase("script:0.3", "old", script=SLOW_SCRIPT),
    # The finish command records the success and switches at once (one round trip):
    # killed before it, the build was never recorded good, so the recovery builds it again.
    KillCase("before-switch", "old"),
    KillCase("after-switch", "new", interrupted_status="success"),
    KillCase("prune", "new", keep=1, prior=2, interrupted_status="success"),
    KillCase("prune:0.01", "new", keep=1, prior=2, bulky=True, interrupted_status="success"),
]


def _describe_release(world: World, release: str) -> str:
    path = world.site.deployments / release
    if not path.exists():
        return "gone"
    bits = [world.manifest_status(release)]
    if (path / ".reconciler-clone").exists():
        bits.append("mid-clone")
    elif (path / ".git").exists():
        bits.append("cloned")
    if (path / "script-started").exists():
        bits.append("script " + ("finished" if (path / "script-done").exists() else "started"))
    return ",".join(bits)


@pytest.mark.parametrize("case", KILL_CASES, ids=[c.fault for c in KILL_CASES])
def test_kill_9_at_deploy_step(case: KillCase, fleet: Fleet, fault_table: FaultTable) -> None:
    holder = Holder()
    with fault_table.case(f"kill -9 at {case.fault}", holder) as row:
        world = holder.world = fleet.worlds[_kill_key(case)]
        assert len(world.releases()) == case.prior, world.diagnostics()
        world.seed_user_data()
        before = set(world.releases())
        old = world.site.active()
        assert old is not None
        head = app_commit(world.app, "v-next")
        slow = world.tmp.parent / f"{world.tmp.name}.slow"
        slow.touch()

        with sampled(world) as sampler:
            faulty = world.reconcile(fault=case.fault)
        slow.unlink()
        assert faulty.returncode == SIGKILLED, (
            f"expected the process to die by SIGKILL at {case.fault}, got exit {faulty.returncode}\n"
            f"{faulty.stdout}{faulty.stderr}")
        assert_never_unresolved(sampler)
        world.wait_for_orphans()

        created = sorted(set(world.releases()) - before)
        new = created[0] if created else None
        if case.fault.split(":")[0] in ("after-build", "clone", "script"):
            assert new is not None, "the faulty run claimed no release directory"
        state_after_kill = _describe_release(world, new) if new else "none"
        allowed = {old} | ({new} if case.expect_live == "new" and new else set())
        live = assert_served_by_good_release(world, allowed)
        assert live == (new if case.expect_live == "new" else old), f"expected the {case.expect_live} release live"
        if live == new:
            assert world.site.commit_of(new) == head
        if case.fault == "before-switch":
            assert new is not None and world.manifest_status(new) == "updating"
        assert_shared_intact(world)
        row.outcome = f"exit -9; live={'new' if live == new else 'old'}; interrupted release {state_after_kill}"
        if case.fault.startswith("prune"):
            pruned_during_fault = sorted(before - set(world.releases()))
            row.notes.append(f"pruned before recovery: {pruned_during_fault or 'none'}")

        with sampled(world) as sampler:
            recovery = world.reconcile()
        assert_never_unresolved(sampler)
        assert_converged(world, recovery, head)
        assert_shared_intact(world)
        history = world.history()
        if new is not None:
            rows = [h for h in history if h["release"] == new]
            assert rows, f"the interrupted deployment {new} vanished from history"
            assert rows[0]["status"] == case.interrupted_status, (
                f"interrupted deployment {new}: status {rows[0]['status']!r}, expected "
                f"{case.interrupted_status!r}")
        if case.fault == "before-switch":
            # Never recorded good, so never activated: rebuilt.
            assert world.site.active() != new, "before-switch: a build never recorded good went live"
        if case.keep == 1:
            successes = [r for r in world.releases() if world.manifest_status(r) == "success"]
            assert successes == [world.site.active()], f"keep=1 left {successes}"
        row.outcome += "; recovery exit 0 Synced"


# -- 2. the SSH server dies in the middle of a deploy script ----------------------------------------


def test_ssh_server_dropped_mid_script(tmp_path: Path, sshd: SshServer, fault_table: FaultTable) -> None:
    holder = Holder()
    with fault_table.case("sshd killed mid-script", holder) as row:
        world = holder.world = World.create(tmp_path, sshd, command_timeout=20, connect_timeout=3)
        slow = tmp_path / "slow"
        world.set_up_live(script=f"touch script-started\nif [ -e {slow} ]; then sleep 5; fi\n")
        world.seed_user_data()
        old = world.site.active()
        assert old is not None
        head = app_commit(world.app, "v2")
        slow.touch()

        with sampled(world) as sampler:
            proc = world.popen("reconcile")
            try:
                wait_until(lambda: any((world.site.deployments / r / "script-started").exists()
                                       for r in world.releases() if r != old),
                           timeout=30, what="the deploy script to start")
                sshd.stop()
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert_never_unresolved(sampler)
        assert proc.returncode == 1, f"exit {proc.returncode}\n{out}{err}"
        assert f"{world.domain}: Unknown" in out, f"a lost connection must make the site Unknown:\n{out}{err}"
        assert "Failed" not in out, out
        status = world.status()
        assert status["sync"] == "Unknown", status
        assert status["message"], status
        assert_served_by_good_release(world, {old})
        assert world.site.active() == old
        assert_shared_intact(world)
        history = world.history()
        assert all(h["status"] not in ("pending", "updating") for h in history), history

        slow.unlink()
        sshd.restart()
        recovery = world.reconcile()
        assert_converged(world, recovery, head)
        assert_shared_intact(world)
        retried = [h for h in world.history() if h["commit_sha"] == head]
        assert retried and retried[0]["status"] == "success", retried
        assert len(retried) >= 2, f"the same commit should have been retried after the lost connection: {retried}"
        row.outcome = (f"exit 1 Unknown ({status['message'][:60]}); old release served; "
                       f"after restart commit retried -> Synced")


# -- 3. a full disk -----------------------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> bool:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    return done.returncode == 0


@pytest.fixture(name="small_fs")
def small_fs_fixture(tmp_path: Path) -> Iterator[Path | None]:
    """A 2 MiB tmpfs for the base path, or None when mounting is not permitted (the case then
    falls back to RLIMIT_FSIZE). Always unmounted at teardown."""
    mountpoint = tmp_path / "srv"
    mountpoint.mkdir()
    mounted = os.geteuid() == 0 and _mount_tmpfs(mountpoint, "2m")
    try:
        yield mountpoint if mounted else None
    finally:
        if mounted:
            for _ in range(50):
                if subprocess.run(["umount", str(mountpoint)], capture_output=True, check=False).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def _fsize_limit(limit: int) -> Any:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_full_disk_fails_cleanly_then_recovers(tmp_path: Path, sshd_session: SshServer, small_fs: Path | None,
                                               fault_table: FaultTable) -> None:
    holder = Holder()
    mode = "tmpfs 2m" if small_fs is not None else "RLIMIT_FSIZE (mount refused)"
    with fault_table.case(f"full disk ({mode})", holder) as row:
        if small_fs is not None:
            world = holder.world = World.create(tmp_path, sshd_session, base=small_fs)
        else:
            # Fallback: local transport, so the file-size limit reaches the commands that write.
            world = holder.world = World.create(tmp_path, None, base=tmp_path / "srv")
        world.set_up_live(keep=3)
        world.seed_user_data()
        old = world.site.active()
        assert old is not None
        # 4 MiB of random hex (about 2 MiB even zlib-compressed): neither the clone nor the checkout fits.
        app_commit(world.app, "big asset", {"public/video.hex": os.urandom(2 * 1024 * 1024).hex()})

        with sampled(world) as sampler:
            full = world.reconcile(preexec=None if small_fs else _fsize_limit(1024 * 1024))
        assert_never_unresolved(sampler)
        assert full.returncode == 1, f"exit {full.returncode}\n{full.stdout}{full.stderr}"
        status = world.status()
        assert status["sync"] == "Failed", status
        assert status["message"], "a failed deploy must say why"
        assert_served_by_good_release(world, {old})
        assert_shared_intact(world)
        history = world.history()
        assert history[0]["status"] == "failed", history[0]
        failed_release = history[0]["release"]
        row.outcome = (f"exit 1 Failed ({status['message'][:60]}); old served; failed release "
                       f"{_describe_release(world, failed_release)}")

        # Free the space (or lift the limit); a new commit converges.
        if small_fs is not None:
            done = subprocess.run(["mount", "-o", "remount,size=64m", str(small_fs)],
                                  capture_output=True, text=True, check=False)
            assert done.returncode == 0, done.stderr
        head = app_commit(world.app, "v3")
        recovery = world.reconcile()
        assert_converged(world, recovery, head)
        assert_shared_intact(world)
        row.outcome += "; space freed -> new commit Synced"


# -- 4. junk and damage in the server's layout ---------------------------------------------------------


def _tree_snapshot(path: Path) -> dict[str, bytes | str]:
    """Every entry under `path` with its content (files) or link target, for byte-exact checks."""
    snapshot: dict[str, bytes | str] = {}
    if path.is_file() or path.is_symlink():
        return {".": os.readlink(path) if path.is_symlink() else path.read_bytes()}
    for item in sorted(path.rglob("*")):
        rel = str(item.relative_to(path))
        if item.is_symlink():
            snapshot[rel] = "-> " + os.readlink(item)
        elif item.is_file():
            snapshot[rel] = item.read_bytes()
        else:
            snapshot[rel] = "<dir>"
    return snapshot


def _junk(world: World) -> dict[str, dict[str, bytes | str]]:
    """Things in deployments/{domain}/ that are not releases; nothing may ever delete them."""
    d = world.site.deployments
    (d / "shared2").mkdir()
    (d / "shared2" / "keep.txt").write_bytes(b"not a release\n")
    (d / "tmp").mkdir()
    (d / "tmp" / "upload.part").write_bytes(os.urandom(512))
    (d / "notes.txt").write_text("operator notes\n")
    (d / "99999999-999999").mkdir()  # release-shaped, but not a real date/time
    (d / "99999999-999999" / "x").write_text("x\n")
    (d / "01012020-000000.bak").mkdir()
    (d / "01012020-000000.bak" / "y").write_text("y\n")
    (d / "02012020-000000").write_bytes(b"a FILE with a release name\n")  # release-shaped FILE
    return {name: _tree_snapshot(d / name) for name in
            ("shared2", "tmp", "notes.txt", "99999999-999999", "01012020-000000.bak", "02012020-000000")}


def _assert_junk_intact(world: World, junk: dict[str, dict[str, bytes | str]]) -> None:
    for name, snapshot in junk.items():
        path = world.site.deployments / name
        assert path.exists() or path.is_symlink(), f"{name} (not a release) was deleted"
        assert _tree_snapshot(path) == snapshot, f"{name} (not a release) was modified"


@pytest.mark.parametrize("case", LAYOUT_CASES, ids=[c.name.replace(" ", "-") for c in LAYOUT_CASES])
def test_damaged_layout(case: LayoutCase, fleet: Fleet, fault_table: FaultTable) -> None:
    holder = Holder()
    with fault_table.case(case.name, holder) as row:
        world = holder.world = fleet.worlds[case.key]
        releases = world.releases()
        assert len(releases) == 2 and world.site.active() == releases[1], world.diagnostics()
        r1, r2 = releases
        world.seed_user_data()
        d = world.site.deployments
        junk = _junk(world)  # present in every layout case: never deleted, never changed
        extra_notes = ""

        if case.name.startswith("corrupt manifest"):
            (d / r1 / ".reconciler-release.json").write_text('{"commit": "abc", "status": "succ')
        elif case.name.startswith("missing manifest"):
            (d / r1 / ".reconciler-release.json").unlink()
        elif case.name.startswith("site path is a real directory"):
            world.site.link.unlink()
            world.site.link.mkdir()
            (world.site.link / "index.html").write_text("hand-made site, not ours\n")
            (world.site.link / "uploads").mkdir()
            (world.site.link / "uploads" / "photo.jpg").write_bytes(os.urandom(2048))
            real_dir = _tree_snapshot(world.site.link)
        elif case.name.startswith("dangling"):
            shutil.rmtree(d / r2)
            assert world.site.link.is_symlink() and not world.site_resolves()
        head = app_commit(world.app, "v3") if case.new_commit else world.head()

        if world.site.link.is_symlink() and world.site_resolves():
            with sampled(world) as sampler:
                done = world.reconcile()
            assert_never_unresolved(sampler)
        else:
            done = world.reconcile()
        _assert_junk_intact(world, junk)
        assert_shared_intact(world)

        if case.name.startswith("site path is a real directory"):
            assert done.returncode == 1, f"exit {done.returncode}\n{done.stdout}{done.stderr}"
            assert str(world.site.link) in done.stdout, f"the refusal must name {world.site.link}:\n{done.stdout}"
            status = world.status()
            assert status["sync"] == "Failed" and str(world.site.link) in status["message"], status
            assert world.site.link.is_dir() and not world.site.link.is_symlink()
            assert _tree_snapshot(world.site.link) == real_dir, "the real directory's contents changed"
            # And again: refused every pass, still nothing touched, no release built for it.
            again = world.reconcile()
            assert again.returncode == 1 and str(world.site.link) in again.stdout
            assert _tree_snapshot(world.site.link) == real_dir
            assert world.releases() == releases, "releases were built for a site that is refused"
            assert not world.lock_present()
            message = status["message"].replace(str(world.site.link), "<site path>")
            row.outcome = f"exit 1 Failed: {message[:70]}; directory intact; junk intact"
            return

        assert_converged(world, done, head)
        if case.key == "layout-junk":
            # Re-running must be a no-op that stays converged and still touches no junk.
            again = world.reconcile()
            assert again.returncode == 0, again.stdout + again.stderr
            _assert_junk_intact(world, junk)
        left = world.releases()
        if case.name.startswith("corrupt manifest"):
            extra_notes = f"corrupt release {'kept' if r1 in left else 'pruned'}"
        elif case.name.startswith("missing manifest"):
            extra_notes = f"manifest-less release {'kept' if r1 in left else 'pruned'}"
        elif case.name.startswith("dangling"):
            live = world.site.active()
            extra_notes = f"relinked to {live} ({'existing' if live in (r1, r2) else 'rebuilt'})"
        row.outcome = "exit 0 Synced; junk intact" + (f"; {extra_notes}" if extra_notes else "")

