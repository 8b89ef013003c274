"""One site's git host that never answers cannot stall its server's probe.

The probe is one command per server, and its timeout is the server's: every site on it would go
Unknown. So each `git ls-remote` in it has its own bound (`git_timeout`, here derived from a small
`command_timeout`: a quarter of 12 s, 3 s), and a head that did not answer is the error of its own
sites only. However many hosts do not answer, the heads take at most half of the probe's time.
A deploy's clone has no such short bound (deploy_timeout is its), but ssh's connect bound ends
one that meets a host gone silent.

Real parts: a TCP tarpit on 127.0.0.1 that accepts every connection and never sends a byte (an
HTTP git host that never answers, and an SSH one that never sends its banner); real git repos;
the server is this machine (`local`) or the real sshd (tests/support/sshd.py), where the probe and git run
in an SSH session. HOME is a short temp dir (git's SSH multiplexing socket lives there).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.config import Settings
from reconciler.core.layout import SitePaths
from reconciler.remote.protocol import locking, site_steps
from tests.support import World, app_commit, git, make_app_repo
from tests.support.sshd import SshServer
from tests.support.tarpit import Tarpit

TARPIT_SITE = "a.example.com"   # its repository is on the tarpit
SIBLINGS = ("b.example.com", "c.example.com")  # same server, their own repositories, new commits
COMMAND_TIMEOUT = 12.0
GIT_WAIT = 3  # git_timeout as derived from COMMAND_TIMEOUT (a quarter)
NO_ANSWER = f"the git host did not answer within {GIT_WAIT}s"
NOT_ASKED = "not asked: "


@pytest.fixture
def tarpit() -> Iterator[Tarpit]:
    pit = Tarpit()
    try:
        yield pit
    finally:
        pit.stop()


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="h", dir="/tmp"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    yield home
    for sock in (home / ".ssh" / "reconciler-mux").glob("*"):
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "x"], capture_output=True, timeout=10)
    subprocess.run(["rm", "-rf", str(home)], check=False)


def live_commit(world: World, domain: str) -> str:
    return git(Path(SitePaths(str(world.base), domain).site_link), "rev-parse", "HEAD")


def _siblings_live(tmp_path: Path, server: SshServer | None) -> tuple[World, dict[str, Path]]:
    """A world on `server` (None: local) with the two sibling sites deployed, each from its own app."""
    world = World.create(tmp_path, server)
    apps = {SIBLINGS[0]: world.app, SIBLINGS[1]: make_app_repo(tmp_path / "app-c")}
    for domain, app in apps.items():
        world.declare(domain, repository=app)
    first = world.reconcile_in_process(command_timeout=COMMAND_TIMEOUT)
    assert all(first[d].sync == "Synced" for d in SIBLINGS), first
    return world, apps


@pytest.mark.parametrize("scheme", ["http", "ssh"])
@pytest.mark.parametrize("where", ["local", pytest.param("sshd", marks=pytest.mark.ssh)])
def test_a_git_host_that_never_answers_is_only_its_own_sites_problem(
        where: str, scheme: str, tarpit: Tarpit, short_home: Path, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    server = request.getfixturevalue("sshd") if where == "sshd" else None
    world, apps = _siblings_live(tmp_path, server)

    world.declare(TARPIT_SITE, repository=tarpit.url(scheme, "a.git"))
    wanted = {domain: app_commit(app, f"v2 of {domain}") for domain, app in apps.items()}
    outcomes = world.reconcile_in_process(command_timeout=COMMAND_TIMEOUT)

    for domain in SIBLINGS:
        assert outcomes[domain].sync == "Synced", outcomes
        assert live_commit(world, domain) == wanted[domain]
    stalled = outcomes[TARPIT_SITE]
    assert stalled.sync == "Unknown", outcomes
    assert stalled.message.startswith(f"cannot resolve branch 'main': {NO_ANSWER}"), stalled
    assert tarpit.held, "git never reached the tarpit"


def test_many_git_hosts_that_never_answer_cannot_use_up_the_probe(
        tarpit: Tarpit, short_home: Path, tmp_path: Path) -> None:
    """17 refs on tarpits: three batches of 8 `ls-remote` at most. All of them within the heads'
    budget (half of command_timeout): the batches that no longer fit are not asked, so the probe
    ends in time and the server's other sites deploy."""
    world, apps = _siblings_live(tmp_path, None)
    pits = [f"pit{n:02}.example.com" for n in range(17)]
    for n, domain in enumerate(pits):
        world.declare(domain, repository=tarpit.url("http", f"r{n}.git"), commit=False)
    git(world.decl, "add", "-A")
    git(world.decl, "commit", "-q", "-m", "17 sites on a git host that never answers")
    wanted = {domain: app_commit(app, f"v2 of {domain}") for domain, app in apps.items()}
    outcomes = world.reconcile_in_process(command_timeout=COMMAND_TIMEOUT)

    for domain in SIBLINGS:
        assert outcomes[domain].sync == "Synced", outcomes
        assert live_commit(world, domain) == wanted[domain]
    assert {o.sync for d, o in outcomes.items() if d in pits} == {"Unknown"}, outcomes
    reasons = [outcomes[d].message.removeprefix("cannot resolve branch 'main': ") for d in pits]
    assert all(r.startswith((NO_ANSWER, NOT_ASKED)) for r in reasons), reasons
    assert any(r.startswith(NOT_ASKED) for r in reasons), reasons  # the third batch at least


@pytest.mark.ssh
def test_a_deploys_clone_gives_up_on_a_git_host_that_stops_answering(
        sshd: SshServer, short_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe's ls-remote is answered, the deploy's clone then meets a host that never sends its
    SSH banner: ssh's connect bound (GIT_PREAMBLE) ends the clone, long before deploy_timeout, as a
    failed build of that site with ssh's reason (the probe's bound does not apply to a deploy)."""
    app = make_app_repo(tmp_path / "app")
    bare = tmp_path / "app.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(app), str(bare)], check=True)
    relay = Tarpit(relay_first=(sshd.host, sshd.port))
    try:
        known = tmp_path / "known_hosts"
        known.write_text(sshd.known_hosts_line.replace(f"]:{sshd.port} ", f"]:{relay.port} "))
        # Without multiplexing (the documented opt-out), the clone needs a connection of its own.
        monkeypatch.setenv("GIT_SSH_COMMAND", f"ssh -o ControlMaster=no -i {sshd.identity_file} -o IdentitiesOnly=yes "
                           f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o BatchMode=yes")
        world = World.create(tmp_path / "w")
        world.declare(TARPIT_SITE, repository=f"ssh://{sshd.user}@127.0.0.1:{relay.port}{bare}")
        outcome = world.reconcile_in_process(command_timeout=COMMAND_TIMEOUT, deploy_timeout=90.0)[TARPIT_SITE]
    finally:
        relay.stop()
    assert relay.relayed == 1 and len(relay.held) >= 3  # the probe's connection (and its relay), the clone's
    assert outcome.sync == "Failed" and outcome.message.startswith("clone failed (exit "), outcome
    logs = [release.read_text() for release in world.deployments(TARPIT_SITE).glob("*/deployment.log")]
    assert len(logs) == 1 and "timed out during banner exchange" in logs[0], logs


def test_git_timeout_sets_the_bound_and_leaves_the_probe_time_for_its_sites(
        tarpit: Tarpit, short_home: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="git_timeout must be positive and at most half of command_timeout"):
        Settings(command_timeout=10.0, git_timeout=6.0)
    world = World.create(tmp_path)
    world.declare(TARPIT_SITE, repository=tarpit.url("http", "a.git"))
    outcome = world.reconcile_in_process(command_timeout=60.0, git_timeout=2.0)[TARPIT_SITE]
    assert outcome.sync == "Unknown", outcome
    assert outcome.message == "cannot resolve branch 'main': the git host did not answer within 2s (git_timeout)"


def test_an_unpins_head_check_in_the_lock_command_has_the_same_bound(tarpit: Tarpit, short_home: Path,
                                                                    tmp_path: Path) -> None:
    """The lock command of an unpin that just landed switches only while one `git ls-remote` finds
    the branch head at the release's commit. That ls-remote has the probe's bound too: a silent git
    host costs the lock command `seconds`, then it does not switch ("SWITCHED -") and the round
    probes as usual, where the head is that site's error. Before, it ran unbounded and the lock
    command hit the server's command timeout (a transport error for the server)."""
    paths = SitePaths(str(tmp_path / "srv"), TARPIT_SITE)
    subprocess.run(["sh", "-c", site_steps.provision(paths).text], check=True, cwd=tmp_path)
    release = "06122026-120000"
    Path(paths.release(release)).mkdir()
    Path(paths.manifest(release)).write_text('{"status":"success","commit":"' + "a" * 40 + '","build_key":"k"}\n')
    head = locking.HeadCheck(tarpit.url("http", "a.git"), "refs/heads/main", "a" * 40, "k", seconds=2)
    command = locking.lock_acquire(paths, '{"run":"unpin"}', activate=release, head=head)
    done = subprocess.run(["sh", "-c", command.text], cwd=tmp_path, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT * 2)  # unbounded, it would hang until killed here
    lines = done.stdout.split("\n")
    assert done.returncode == 0 and lines[0] == locking.LOCK_ACQUIRED, (done.returncode, done.stdout, done.stderr)
    assert lines[1] == f"{locking.SWITCHED} -", done.stdout
    assert not Path(paths.site_link).is_symlink(), "switched without the head check"
