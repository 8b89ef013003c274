"""A pin that just landed goes live in ONE remote command: the lock command re-checks the pinned
release (there, recorded a success) and switches to it before it probes (issue 15). The rest of an
activation (reload, history) follows it. Real git repos, the local transport (the same shell text
as over SSH), the real store; the site link is read after every remote command."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from reconciler.engine.converge import Reconciler
from reconciler.engine.outcome import SiteOutcome
from reconciler.engine.store import Store
from tests.support import app_commit, make_app_repo, make_decl_repo, write_site
from tests.support.config import reconcile, settings_for

DOMAIN = "pin.example.com"


def _deploy_two(tmp_path: Path) -> tuple[Path, Path, str, str]:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    base = tmp_path / "srv"
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(app), script="true\n",
               reload="echo reloaded")
    settings = settings_for(decl, tmp_path / "state")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    first = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    app_commit(app, "v2")
    assert reconcile(settings)[DOMAIN].sync == "Synced"
    second = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    assert first != second
    return decl, base, first, second


def _eager_round(tmp_path: Path, decl: Path, base: Path) -> tuple[SiteOutcome, list[str], list[str]]:
    """The daemon's round for a pin that just landed; the site link after each remote command."""
    settings = settings_for(decl, tmp_path / "state")

    async def go() -> tuple[SiteOutcome, list[str], list[str]]:
        reconciler = Reconciler(settings, Store(settings.db_path))
        transport = reconciler.pool.get("local")
        links: list[str] = []
        commands: list[str] = []
        run = transport.run

        async def recording(command: str, **kwargs: object) -> object:
            result = await run(command, **kwargs)  # type: ignore[arg-type]
            commands.append(command)
            links.append(os.readlink(base / DOMAIN).rsplit("/", 1)[-1])
            return result

        transport.run = recording  # type: ignore[method-assign]
        try:
            decls = reconciler.load()
            done = await reconciler.converge_server("local", [decls.sites[DOMAIN]], decls.commit, eager={DOMAIN})
            return done.outcomes[0], links, commands
        finally:
            await reconciler.close()
            reconciler.store.close()

    return asyncio.run(go())


def test_a_pin_is_live_after_the_first_remote_command(tmp_path: Path) -> None:
    decl, base, first, _second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first)
    outcome, links, _commands = _eager_round(tmp_path, decl, base)
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    assert links[0] == first, f"live after the first command: {links}"
    assert any(a.startswith("activate") or "rollback" in a for a in outcome.actions), outcome.actions
    # The activation's reload ran, and the lock is gone.
    log = (base / "deployments" / DOMAIN / first / "deployment.log").read_text()
    assert "reloaded" in log.split("==> reload")[-1]
    assert not (base / "deployments" / DOMAIN / ".reconciler-lock").exists()
    # A second round has nothing to switch.
    again, links, _ = _eager_round(tmp_path, decl, base)
    assert again.sync == "Synced" and links[0] == first and not any("rollback" in a for a in again.actions)


def test_the_lock_command_never_switches_to_a_failed_build(tmp_path: Path) -> None:
    decl, base, first, second = _deploy_two(tmp_path)
    manifest = base / "deployments" / DOMAIN / first / ".reconciler-release.json"
    manifest.write_text(manifest.read_text().replace('"status":"success"', '"status":"failed"'))
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first)
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert set(links) == {second}, f"the failed build went live: {links}"
    assert outcome.health == "Degraded" and "not a successful release" in outcome.message, outcome.message


def test_a_pin_that_fails_its_health_check_is_reported_and_holds(tmp_path: Path) -> None:
    decl, base, first, _second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, server="local", base_path=str(base), repository=str(tmp_path / "app"),
               script="true\n", reload="echo reloaded", pin=first,
               health={"command": "echo down; exit 1", "retries": 0})
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert links[0] == first and links[-1] == first, links
    assert outcome.health == "Degraded" and "fails its health check" in outcome.message, outcome.message
    assert "pin holds" in outcome.message


def _site(tmp_path: Path, base: Path, **extra: object) -> dict[str, object]:
    return {"server": "local", "base_path": str(base), "repository": str(tmp_path / "app"), "script": "true\n",
            "reload": "echo reloaded", **extra}


def test_an_unpin_is_live_after_the_first_remote_command(tmp_path: Path) -> None:
    """Back to the branch head's build in the lock command: it checks that the head (one
    ls-remote) is still the commit that build was made from."""
    decl, base, first, second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, **_site(tmp_path, base, pin=first))
    _eager_round(tmp_path, decl, base)
    write_site(decl, DOMAIN, **_site(tmp_path, base))  # the unpin
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert (outcome.sync, outcome.health) == ("Synced", "Healthy"), outcome.message
    assert links[0] == second, f"live after the first command: {links}"
    assert any("roll-forward" in a for a in outcome.actions), outcome.actions


def test_an_unpin_after_the_branch_moved_deploys_the_new_head_not_the_old_build(tmp_path: Path) -> None:
    decl, base, first, second = _deploy_two(tmp_path)
    write_site(decl, DOMAIN, **_site(tmp_path, base, pin=first))
    _eager_round(tmp_path, decl, base)
    head = app_commit(tmp_path / "app", "v3")  # the branch moved while pinned
    write_site(decl, DOMAIN, **_site(tmp_path, base))
    outcome, links, _ = _eager_round(tmp_path, decl, base)
    assert outcome.sync == "Synced", outcome.message
    assert second not in links, f"the old build went live although the head moved: {links}"
    live = os.readlink(base / DOMAIN).rsplit("/", 1)[-1]
    assert live not in (first, second)
    manifest = (base / "deployments" / DOMAIN / live / ".reconciler-release.json").read_text()
    assert head in manifest
