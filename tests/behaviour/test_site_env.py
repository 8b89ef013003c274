"""A site's encrypted environment (`sites.d/<domain>.env.age`) is desired state on every server
of the site: decrypted with the reconciler's age key and written to shared/.env (0600) before
the build and any switch; a new commit of it, or a hand-edited shared/.env, is written again
and followed by the reload (or, with `env_change = "redeploy"`, a fresh release); a file that
cannot be decrypted is that site's error and nothing is written."""

from __future__ import annotations

import hashlib
import logging
import stat

import pytest

from tests.support.age_keys import AgeKey, age_key, seal, write_recipients
from tests.support.fleet import Fleet

pytestmark = pytest.mark.ssh

SECRET = "s3cr3t-behaviour-7f1c"
ENV = f"APP_NAME=shop\nDB_PASSWORD={SECRET}\n"


def _keyed(fleet: Fleet) -> AgeKey:
    key = age_key(fleet.tmp / "age.key")
    with fleet.config.open("a") as config:
        config.write(f'age_identity_file = "{key.identity_file}"\n')
    write_recipients(fleet.decl, key.public)
    return key


def _env(fleet: Fleet, server: object) -> str:
    file = fleet.site(server).deployments / "shared" / ".env"  # type: ignore[arg-type]
    return file.read_text() if file.exists() else ""


def test_env_is_written_on_every_server_before_the_build(fleet: Fleet) -> None:
    """The first deploy finds shared/.env already there (its script reads it through the
    release's .env link), 0600, with the declared content, on every server."""
    key = _keyed(fleet)
    seal(fleet.decl, fleet.domain, ENV, key.public)
    fleet.declare(script="grep -c DB_PASSWORD .env > env-seen-by-build\n")
    run = fleet.reconcile()
    assert run.rc == 0, run
    live = fleet.live_release()
    for server in fleet.servers:
        shared = fleet.site(server).deployments / "shared" / ".env"
        assert shared.read_text() == ENV
        assert stat.S_IMODE(shared.stat().st_mode) == 0o600
        assert (fleet.site(server).release(live) / "env-seen-by-build").read_text().strip() == "1"
    assert fleet.status()["sync"] == "Synced"
    assert SECRET not in run.out + run.err


def test_a_new_env_commit_is_written_everywhere_then_reloaded(fleet: Fleet) -> None:
    """A changed env file rewrites shared/.env on every server and runs the reload command
    there; the live release stays (no build)."""
    key = _keyed(fleet)
    seal(fleet.decl, fleet.domain, ENV, key.public)
    fleet.declare(script="echo built\n", reload=f"echo reloaded >> {fleet.path('reloads')}\n")
    assert fleet.reconcile().rc == 0
    before = fleet.releases()
    for server in fleet.servers:
        fleet.remove("reloads", on=server)
    seal(fleet.decl, fleet.domain, ENV + "MAIL_HOST=smtp.local\n", key.public)
    assert fleet.reconcile().rc == 0
    assert [_env(fleet, s) for s in fleet.servers] == [ENV + "MAIL_HOST=smtp.local\n"] * len(fleet.servers)
    assert fleet.releases() == before, "a reload, not a build"
    assert [fleet.lines("reloads", on=s) for s in fleet.servers] == [["reloaded"]] * len(fleet.servers)
    assert fleet.reconcile().rc == 0
    assert [fleet.lines("reloads", on=s) for s in fleet.servers] == [["reloaded"]] * len(fleet.servers), \
        "written once: the next pass finds the digest equal"
    assert fleet.status()["sync"] == "Synced"


def test_a_hand_edited_env_is_drift_put_back_without_its_content_in_the_log(
        fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    """shared/.env changed by hand on the last server: the probe's digest differs, the file is
    written again there only, and the log says "env drift" without either content."""
    key = _keyed(fleet)
    seal(fleet.decl, fleet.domain, ENV, key.public)
    fleet.declare(script="echo built\n")
    assert fleet.reconcile().rc == 0
    shared = fleet.site(fleet.last).deployments / "shared" / ".env"
    shared.write_text("DB_PASSWORD=typed-by-hand-913\n")
    caplog.set_level(logging.INFO)
    caplog.clear()
    assert fleet.reconcile().rc == 0
    assert shared.read_text() == ENV
    drift = [r.getMessage() for r in caplog.records if "env drift" in r.getMessage()]
    assert len(drift) == 1, caplog.text
    assert hashlib.sha256(ENV.encode()).hexdigest()[:12] in drift[0]
    assert SECRET not in caplog.text and "typed-by-hand-913" not in caplog.text


def test_env_change_redeploy_builds_a_fresh_release(fleet: Fleet) -> None:
    """`env_change = "redeploy"`: a changed env file is followed by a new release on every
    server, not a reload."""
    key = _keyed(fleet)
    seal(fleet.decl, fleet.domain, ENV, key.public)
    fleet.declare(script="echo built\n", env_change="redeploy")
    assert fleet.reconcile().rc == 0
    first = fleet.live_release()
    seal(fleet.decl, fleet.domain, ENV + "QUEUE=redis\n", key.public)
    assert fleet.reconcile().rc == 0
    second = fleet.live_release()
    assert second != first
    assert [_env(fleet, s) for s in fleet.servers] == [ENV + "QUEUE=redis\n"] * len(fleet.servers)
    assert fleet.reconcile().rc == 0 and fleet.live_release() == second, "one fresh release, not one a pass"


def test_an_env_file_the_key_cannot_open_is_the_sites_error_only(fleet: Fleet) -> None:
    """Encrypted to another key: the site is Invalid saying why, nothing is written or built
    on any server; a sibling site without an env file deploys as ever."""
    _keyed(fleet)
    stranger = age_key(fleet.tmp / "other.key")
    seal(fleet.decl, fleet.domain, ENV, stranger.public)
    fleet.declare(script="echo built\n")
    from tests.support.repos import write_site
    write_site(fleet.decl, "blog.example.com", server=fleet.targets[0], base_path=fleet.base_path,
               repository=str(fleet.app))
    run = fleet.reconcile()
    view = fleet.status()
    assert view["sync"] == "Invalid", view
    assert "env.age" in view["message"] and "cannot be decrypted" in view["message"], view
    assert fleet.live() == [None] * len(fleet.servers)
    assert [_env(fleet, s) for s in fleet.servers] == [""] * len(fleet.servers)
    assert fleet.pair.site(fleet.first, "blog.example.com").active() is not None, run
