"""What the operator is told, for a site on one server and on two: a `failed`
notification names the server whose build failed. The real daemon (`reconciler run`) posts to a
webhook receiver on 127.0.0.1; real sshds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fleet import Fleet
from tests.support.process import Daemons
from tests.support.receiver import Receiver, receiving
from tests.support.wait import wait_until

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see


@pytest.fixture(name="events")
def events_fixture() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (tests/support/receiver.py)."""
    with receiving() as serving:
        yield serving


def test_a_failed_notification_names_the_server_whose_build_failed(
        fleet: Fleet, daemons: Daemons, events: Receiver) -> None:
    url = events.root + "/hook"
    with fleet.config.open("a") as config:
        config.write(f'\n[[notify]]\nurl = "{url}"\n')
    fleet.declare(script=f"test ! -e {fleet.path('broken')} || {{ echo 'composer: mirror down'; exit 3; }}\n")
    assert fleet.reconcile().rc == 0
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v2")
    daemon = daemons.launcher(fleet.tmp, fleet.config).start()
    failed = wait_until(lambda: [p.body for p in events.at("/hook", "failed")], 30, "a failed event",
                        daemon.tail)
    daemon.stop()
    text = failed[0]["text"].replace("\u200b", "")  # the text makes every @ inert for chat
    assert fleet.last.destination in text, text
    assert all(server.destination not in text for server in fleet.servers if server is not fleet.last), text
