"""`reconciler status [--json] [--exit-code] [D]`: every declared site as a table or JSON, or
one in detail (why it is in its state, its last deployments); looking deploys nothing. With
--exit-code, exit 3 (ATTENTION) when a site needs a person: Failed, Invalid, Unknown, Degraded or
Missing, never for the reconciler at work. Sites use `server = "local"`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli.commands import ATTENTION
from reconciler.cli.commands.status import HEADERS, attention_code
from tests.support import app_commit, cli_in_process
from tests.support.cli_world import DOMAIN, OTHER, CliWorld, tree


def test_status_with_an_empty_state_dir_shows_declared_sites_as_unknown(world: CliWorld) -> None:
    world.declare()
    world.declare(OTHER, colour="blue")
    assert not world.state.exists()
    rc, out, err = world.cli("status")
    assert rc == 0, (out, err)
    assert DOMAIN in out and OTHER in out
    views = world.status()
    assert sorted(views) == [OTHER, DOMAIN]
    never = views[DOMAIN]
    assert (never["sync"], never["health"]) == ("Unknown", "Unknown"), never
    assert never["message"], "a never reconciled site must say so"
    assert never["active_release"] is None and never["server"] == "local"
    assert views[OTHER]["sync"] == "Invalid" and "colour" in views[OTHER]["message"]
    # status of one site.
    rc, out, _ = world.cli("status", "--json", DOMAIN)
    assert rc == 0 and [v["domain"] for v in json.loads(out)] == [DOMAIN]
    # Nothing was deployed by looking.
    assert tree(world.base) == []


def test_status_of_one_site_says_why_and_lists_its_last_deployments(world: CliWorld) -> None:
    world.declare(php="8.3")
    for n in range(6):
        app_commit(world.app, f"v{n}")
        world.cli("reconcile")
    world.declare(php="8.3", script="exit 7\n")
    assert world.cli("reconcile").rc == 1
    out = world.ok("status", DOMAIN)
    assert out.startswith(f"{DOMAIN} on local\n"), out
    assert "sync:      Failed" in out and "why:" in out and "exit 7" in out
    deployment_lines = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(deployment_lines) == 5, out
    assert any(line.rstrip().endswith("active") for line in deployment_lines)


def test_status_exit_code_lets_monitoring_see_a_failed_site(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    assert world.cli("status", "--exit-code").rc == 0
    world.declare(script="echo about to fail\nexit 7\n")
    assert world.cli("reconcile").rc == 1
    assert world.status()[DOMAIN]["sync"] == "Failed"
    # Plain status keeps SPEC's exit 0; --exit-code is for monitoring.
    assert world.cli("status").rc == 0
    assert world.cli("status", "--exit-code").rc == ATTENTION == 3
    assert world.cli("status", "--exit-code", "--json", DOMAIN).rc == ATTENTION


def _view(sync: str, health: str) -> dict[str, Any]:
    return {"sync": sync, "health": health}


@pytest.mark.parametrize(("sync", "health"), [("Failed", "Healthy"), ("Invalid", "Unknown"), ("Unknown", "Unknown"),
                                              ("Synced", "Degraded"), ("Synced", "Missing")])
def test_a_site_needing_a_person_is_attention(sync: str, health: str) -> None:
    assert attention_code([_view("Synced", "Healthy"), _view(sync, health)]) == ATTENTION


@pytest.mark.parametrize(("sync", "health"), [("Synced", "Healthy"), ("Progressing", "Healthy"),
                                              ("OutOfSync", "Healthy"), ("Progressing", "Unknown")])
def test_the_reconciler_at_work_is_no_alarm(sync: str, health: str) -> None:
    assert attention_code([_view(sync, health)]) == 0
    assert attention_code([]) == 0


def test_the_table_lists_every_site_with_its_headers(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.declare(OTHER, colour="blue")
    world.ok("reconcile", "--site", DOMAIN)
    header, *rows = world.ok("status").splitlines()
    assert header.split() == [word for h in HEADERS for word in h.split()]
    assert sorted(row.split()[0] for row in rows) == sorted([DOMAIN, OTHER])
    mine = next(row for row in rows if row.startswith(DOMAIN))
    assert "Synced" in mine and "Healthy" in mine and "\033[" not in mine, "no colour when piped"


def test_a_monitoring_check_without_the_service_s_state_alarms(world: CliWorld, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`status --exit-code` that cannot see the service's sites exits 2 (a configuration problem)
    instead of 0 with an empty table: run with no config file at all, or with a config whose
    state_dir holds no database. Plain `status` still shows what it can (exit 0)."""
    world.declare(script="echo built\n")
    # No config file: not --config, not $RECONCILER_CONFIG, no ./reconciler.toml.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("RECONCILER_CONFIG", raising=False)
    rc, out, err = cli_in_process(["status", "--exit-code"])
    assert (rc, out) == (2, ""), err
    assert "no config file" in err and "--config /etc/reconciler/reconciler.toml" in err
    assert cli_in_process(["status"]).rc == 0
    # The service's config, but its state database is not there (never run, or the wrong host).
    assert not world.state.exists()
    rc, out, err = world.cli("status", "--exit-code")
    assert (rc, out) == (2, ""), err
    assert f"no state database at {world.state / 'reconciler.db'}" in err
    assert world.cli("status").rc == 0
    assert not world.state.exists()  # looking created nothing
    world.ok("reconcile")
    assert world.cli("status", "--exit-code").rc == 0
