"""Fair dispatch: when many servers' sites all need a deploy at once, the global
`concurrency` is shared between the servers instead of going to whichever server's probe
answered first (engine/fairness.py).

Real parts: one OpenSSH sshd reached under three spellings, which the transport pool keys
apart, so to the reconciler they are three servers, each with its own connection and session
cap; real git repositories; one real pass in this process. Each deploy script appends its
domain to a file on the "server" (this machine) and then sleeps a little, so the file lists the
deploys in the order they were given a slot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import Daemons, World
from tests.support.process import check_code_under_test
from tests.support.sshd import SshServer

PER_SERVER = 3


def spellings(server: SshServer) -> dict[str, str]:
    """Three destinations of the one sshd, by a letter that names the sites on each."""
    return {"a": server.destination, "b": f"{server.host}:{server.port}", "c": "testserver"}


def test_concurrency_is_shared_between_servers(tmp_path: Path, sshd: SshServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    world = World.create(tmp_path, sshd)
    starts = tmp_path / "starts"
    servers = spellings(sshd)
    for letter, destination in servers.items():
        for n in range(1, PER_SERVER + 1):
            domain = f"{letter}{n}.example.com"
            # Sleep: a slot stays held long enough for every server's probe to have answered
            # and queued its sites before the first slot frees.
            world.declare(domain, server=destination, script=f'echo {domain} >> "{starts}"\nsleep 1\n')

    outcomes = world.reconcile_in_process(concurrency=2, ssh_config=sshd.ssh_config)

    assert {d: (o.sync, o.health) for d, o in outcomes.items()} == \
        {f"{letter}{n}.example.com": ("Synced", "Healthy") for letter in servers for n in range(1, PER_SERVER + 1)}
    order = [line.split(".")[0] for line in starts.read_text().split()]
    assert len(order) == len(servers) * PER_SERVER, order
    first_of = {letter: min(i for i, site in enumerate(order) if site[0] == letter) for letter in servers}
    last_of = {letter: max(i for i, site in enumerate(order) if site[0] == letter) for letter in servers}
    # Every server got its first deploy started before any server got its last one started:
    # a FIFO semaphore serves one server's queued sites all before the next server's first
    # (a1 a2 a3 b1 b2 b3 c1 c2 c3, whichever probe answered first).
    assert max(first_of.values()) < min(last_of.values()), f"deploys started in the order {order}"


def test_a_site_is_not_held_back_by_its_servers_slowest_deploy(tmp_path: Path, daemons: Daemons,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon frees each site of a server round as soon as its own outcome is known: a new
    commit for a site that finished is deployed while a sibling on the same server still builds.
    (It used to stay busy until the whole round ended, here until the slow build did.)"""
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    world = World.create(tmp_path, None, daemons=daemons, interval=3600)  # no poll: only the change triggers
    gate, started = tmp_path / "gate", tmp_path / "slow.started"
    world.declare("slow.example.com", script=f'touch "{started}"\n'
                  f'i=0; while [ ! -e "{gate}" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done\n')
    world.declare("quick.example.com", script="echo one\n")
    quick, slow = world.on_disk("quick.example.com"), world.on_disk("slow.example.com")
    world.launcher.source = check_code_under_test()  # RECONCILER_UNDER_TEST=<old checkout> shows the defect
    world.start_daemon()
    try:
        world.wait(lambda: started.exists() and quick.active(), "quick live and slow building", 60)
        first = quick.active()
        world.declare("quick.example.com", script="echo two\n")  # a new build for quick only
        world.wait(lambda: quick.active() not in (None, first), "quick's new build live while slow builds", 30)
        assert slow.active() is None, "slow's build was to be still waiting at its gate"
    finally:
        gate.touch()
    world.wait(lambda: slow.active(), "slow live once its gate opened", 60)
