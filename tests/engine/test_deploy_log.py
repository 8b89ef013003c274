"""A deployment's output as it is written (engine/deploy_log.py): a finished deployment's local
copy is the whole answer (no server asked), else the deployment's own server's log is read from
the offset reached, bytes exact (a character split between two reads comes out whole), until the
deployment ends. Recording servers (tests/support/engine_rig.py), a real state database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.status import DeployStatus
from reconciler.engine import deploy_log
from reconciler.engine.deploy_log import finished_copy, follow_log
from tests.support.engine_rig import DOMAIN, Rig, engine_rig

RELEASE = "06122026-120000"


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    monkeypatch.setattr(deploy_log, "FOLLOW_EVERY", 0)
    with engine_rig(tmp_path, ("web-1", "web-2")) as made:
        yield made


def _row(rig: Rig, server: str, status: str, local_log: str | None = None) -> dict[str, Any]:
    """A deployment row of `server` whose log is on that server at the usual place."""
    release_path = f"{rig.base}/deployments/{DOMAIN}/{RELEASE}"
    deployment_id = rig.store.start_deployment(
        site=DOMAIN, server=server, release=RELEASE, status=status, deployment_path=release_path,
        log_file_path=f"{release_path}/deployment.log", local_log=local_log, started_at="2026-12-06T12:00:00Z")
    row = rig.store.deployment(deployment_id)
    assert row is not None
    return dict(row)


def _server_log(rig: Rig, server: str) -> Path:
    path = rig.on(server).root / "deployments" / DOMAIN / RELEASE / "deployment.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _read(rig: Rig, row: dict[str, Any], follow: bool) -> list[str]:
    async def go() -> list[str]:
        return [chunk async for chunk in follow_log(rig.store, rig.pool, row, 10, follow=follow)]  # type: ignore[arg-type]

    return asyncio.run(go())


def test_a_finished_deployments_local_copy_is_the_whole_answer(rig: Rig) -> None:
    local = rig.tmp / "1.log"
    local.write_text("kept here\n")
    row = _row(rig, "web-1", DeployStatus.SUCCESS, str(local))
    _server_log(rig, "web-1").write_text("on the server\n")
    assert finished_copy(row, follow=True) == local
    assert _read(rig, row, follow=True) == ["kept here\n"]
    assert rig.on("web-1").sent == [], "a finished deployment's log asks no server"


def test_an_unfinished_deployment_is_followed_on_its_server_not_its_local_copy(rig: Rig) -> None:
    local = rig.tmp / "1.log"
    local.write_text("stale copy\n")
    row = _row(rig, "web-1", DeployStatus.UPDATING, str(local))
    assert finished_copy(row, follow=True) is None
    assert finished_copy(row, follow=False) == local, "nobody follows: what there is now"


def test_following_reads_only_new_bytes_until_the_deployment_ends(rig: Rig) -> None:
    row = _row(rig, "web-1", DeployStatus.UPDATING)
    log = _server_log(rig, "web-1")
    log.write_bytes(b"==> clone\ncaf\xc3")  # a character split between two reads

    async def go() -> list[str]:
        chunks = []
        async for chunk in follow_log(rig.store, rig.pool, row, 10):  # type: ignore[arg-type]
            chunks.append(chunk)
            if len(chunks) == 1:
                log.write_bytes(log.read_bytes() + b"\xa9\n==> done\n")
                rig.store.update_deployment(row["id"], status=DeployStatus.SUCCESS)
        return chunks

    chunks = asyncio.run(go())
    assert "".join(chunks) == "==> clone\ncafé\n==> done\n", chunks
    assert chunks[0] == "==> clone\ncaf", "the half character waits for its other half"
    assert len(rig.on("web-1").sent) == 2, "the read after the end is the last"


def test_a_builds_log_is_read_from_the_server_that_built_it(rig: Rig) -> None:
    """A site on many servers has a row per server: each row's log is its own server's."""
    _server_log(rig, "web-1").write_text("only on web-1\n")
    _server_log(rig, "web-2").write_text("only on web-2\n")
    row = _row(rig, "web-2", DeployStatus.FAILED)
    assert _read(rig, row, follow=False) == ["only on web-2\n"]
    assert rig.on("web-1").sent == []


def test_a_row_without_a_log_on_a_server_says_its_message(rig: Rig) -> None:
    deployment_id = rig.store.start_deployment(site=DOMAIN, server="web-1", release=RELEASE,
                                               status=DeployStatus.FAILED, message="cannot create release directory",
                                               started_at="2026-12-06T12:00:00Z")
    row = rig.store.deployment(deployment_id)
    assert row is not None
    assert _read(rig, dict(row), follow=True) == ["cannot create release directory\n"]
    assert all(not t.sent for t in rig.pool.servers.values())
