"""Fleet templates as desired state, on one server and on two: a change to `templates/<name>.toml`
redeploys every site that names the template, on every server, and no other site; `diff` and
`reconcile --dry-run` say beforehand which sites it moves and why (the template, the key and the
file line that sets it).

Real sshds (each server its own filesystem), real git, the CLI in this process."""

from __future__ import annotations

import pytest

from tests.support.fleet import Fleet
from tests.support.layers import write_template
from tests.support.repos import write_site

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see

SIBLING = "blog.example.com"  # names the template too
OWN = "docs.example.com"      # has its own script


def _declare(fleet: Fleet, domain: str, **fields: object) -> None:
    where = {"server": fleet.targets[0]} if fleet.shape == "one" else {"servers": fleet.targets}
    write_site(fleet.decl, domain, base_path=fleet.base_path, repository=str(fleet.app), **where, **fields)


def _live(fleet: Fleet, domain: str) -> list[str | None]:
    return [fleet.pair.site(server, domain).active() for server in fleet.servers]


def _sections(out: str) -> dict[str, list[str]]:
    """`diff`'s output by site: its header line, then its indented lines."""
    said: dict[str, list[str]] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            current = said.setdefault(line.split(" ")[0].rstrip(":"), [])
        current.append(line)
    return said


def test_a_template_change_redeploys_every_site_using_it_and_no_other(fleet: Fleet) -> None:
    write_template(fleet.decl, "laravel", 'script = "echo v1 >> built.txt"\nkeep = 4\n')
    fleet.declare(template="laravel")
    _declare(fleet, SIBLING, template="laravel")
    _declare(fleet, OWN, script="echo own\n")
    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    before = {domain: _live(fleet, domain) for domain in (fleet.domain, SIBLING, OWN)}
    assert all(None not in live for live in before.values()), before

    write_template(fleet.decl, "laravel", 'script = "echo v2 >> built.txt"\nkeep = 4\n')
    rc, out, err = fleet.cli("diff")
    assert rc == 1, (out, err)
    said = _sections(out)
    assert said[OWN][0].endswith("up to date") and len(said[OWN]) == 1, out
    for domain in (fleet.domain, SIBLING):
        assert "  because template laravel changed: script (templates/laravel.toml:1)" in said[domain], out
        assert any(line.startswith("  + ") for line in said[domain]), out
    rc, out, err = fleet.cli("reconcile", "--dry-run")  # says the same, and changes nothing either
    said = _sections(out)
    for domain in (fleet.domain, SIBLING):
        assert "  because template laravel changed: script (templates/laravel.toml:1)" in said[domain], out
    assert len(said[OWN]) == 1, out

    rc, out, err = fleet.reconcile()
    assert rc == 0, (out, err)
    assert _live(fleet, OWN) == before[OWN]
    for domain in (fleet.domain, SIBLING):
        live = _live(fleet, domain)
        assert None not in live and len(set(live)) == 1 and live != before[domain], (domain, live, before)
        for server in fleet.servers:
            built = fleet.pair.site(server, domain).link / "built.txt"
            assert built.read_text() == "v2\n"
