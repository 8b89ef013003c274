"""The behaviour suite's fixtures: `fleet`, a site on one real sshd or on two (tests/support/fleet.py).

Every scenario runs for both shapes: `fleet` is parametrised `one`/`two`; a scenario whose
behaviour is a known bug for one shape re-parametrises it with `shapes(...)` (strict xfail).
The two sshds are started once for the whole folder and their disks wiped between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet import SHAPES, Fleet, shared_pair, wipe
from tests.support.sshd import ServerPair


@pytest.fixture(name="fleet_pair", scope="package")
def fleet_pair_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPair]:
    yield from shared_pair(tmp_path_factory.mktemp("fleet_pair"))


@pytest.fixture(name="fleet", params=SHAPES)
def fleet_fixture(request: pytest.FixtureRequest, fleet_pair: ServerPair, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    for server in fleet_pair.servers:  # a test that stopped a server leaves it running again
        server.start()
    wipe(fleet_pair)
    yield Fleet(request.param, fleet_pair, tmp_path)
