"""What the daemon's HTTP endpoint shows of a site, on one server and on two:
`/metrics` has a series per server of the site (not only its first server's), and the dashboard
shows a release once, with a badge per server saying its result (a click shows that server's
output), and a Rollback button only where the action takes it: clicking it is accepted and every
server switches. On today's main a site on two servers has its first server's metrics only, and
two dashboard rows per release, the live release's twin offering a Rollback that answers 409.

The real daemon (`reconciler run`, with `listen` and `api_token`), real sshds, Debian's Chromium
driven by Playwright (tests/e2e/test_dashboard.py's `browser` fixture).
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.e2e.test_dashboard import browser  # noqa: F401  (the Chromium fixture, used by name)
from tests.support.client import call
from tests.support.dashboard import confirm
from tests.support.fleet import Fleet
from tests.support.net import free_port
from tests.support.process import DaemonProcess, Daemons, Launcher
from tests.support.wait import wait_until

pytestmark = pytest.mark.ssh  # the sshds come from a folder-wide fixture the root conftest does not see

TOKEN = "reporting-token"
PAGE_MS = 30_000  # Playwright's bound for the page to show what a pass did


def _get(root: str, path: str) -> tuple[int, str]:
    answer = call(root + path, token=TOKEN, timeout=10)
    return answer.status, answer.text


def _serve(fleet: Fleet, launcher: Launcher) -> tuple[str, DaemonProcess]:
    """The daemon on `fleet`'s config with its HTTP endpoint: (its root URL, the process)."""
    port = free_port()
    with fleet.config.open("a") as config:
        config.write(f'listen = "127.0.0.1:{port}"\napi_token = "{TOKEN}"\n')
    daemon = launcher.start()
    root = f"http://127.0.0.1:{port}"

    def answering() -> bool:
        assert daemon.alive(), daemon.tail()
        return _get(root, "/api/sites")[0] == 200

    wait_until(answering, 30, f"the daemon's HTTP endpoint on {root}", daemon.tail)
    return root, daemon


def _samples(root: str) -> list[Sample]:
    status, text = _get(root, "/metrics")
    assert status == 200, text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _of(samples: list[Sample], name: str, **labels: str) -> dict[str, float]:
    """`name`'s samples matching `labels`, by their server label."""
    return {s.labels["server"]: s.value for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())}


def test_metrics_have_a_series_per_server_of_the_site(fleet: Fleet, daemons: Daemons) -> None:
    fleet.declare(script=f"test ! -e {fleet.path('broken')} || {{ echo 'composer: mirror down'; exit 3; }}\n")
    assert fleet.reconcile().rc == 0
    fleet.commit("v2")
    assert fleet.reconcile().rc == 0
    root, daemon = _serve(fleet, daemons.launcher(fleet.tmp, fleet.config))
    every = dict.fromkeys(fleet.targets, 1.0)
    samples = _samples(root)
    info = [s for s in samples if s.name == "reconciler_site_info" and s.labels["domain"] == fleet.domain]
    assert sorted(s.labels["server"] for s in info) == sorted(fleet.targets), info
    assert {(s.labels["sync"], s.labels["health"]) for s in info} == {("Synced", "Healthy")}, info
    assert _of(samples, "reconciler_site_server_in_step", domain=fleet.domain) == every
    assert _of(samples, "reconciler_deploys_total", result="success") == dict.fromkeys(fleet.targets, 2.0)
    assert _of(samples, "reconciler_deploys_total", result="failed") == dict.fromkeys(fleet.targets, 0.0)

    # A build that fails on the last server: the site is Failed; that server is out of step.
    fleet.touch("broken", on=fleet.last)
    fleet.commit("v3")

    def failed() -> list[Sample] | None:
        shot = _samples(root)
        return shot if _of(shot, "reconciler_site_info", domain=fleet.domain, sync="Failed") else None

    samples = wait_until(failed, 60, "the failed build in /metrics", daemon.tail)
    in_step = _of(samples, "reconciler_site_server_in_step", domain=fleet.domain)
    assert in_step == {server: float(server != fleet.last.destination and fleet.shape == "two")
                       for server in fleet.targets}, in_step
    assert _of(samples, "reconciler_deploys_total", result="failed") == {
        server: float(server == fleet.last.destination) for server in fleet.targets}
    assert daemon.stop() == 0, daemon.tail()


def test_the_dashboard_shows_a_release_once_with_a_badge_per_server(
        fleet: Fleet, daemons: Daemons, browser: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    # The CLI in processes of its own: Playwright's event loop runs in this thread.
    launcher = daemons.launcher(fleet.tmp, fleet.config)
    fleet.declare(script="echo built-in-$(basename $PWD)\n")
    assert launcher.cli("reconcile").returncode == 0
    first = fleet.live_release()
    fleet.commit("v2")
    assert launcher.cli("reconcile").returncode == 0
    second = fleet.live_release()
    root, daemon = _serve(fleet, launcher)
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.set_default_timeout(PAGE_MS)
    js_errors: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    page.goto(f"{root}/#token={TOKEN}")

    site = page.locator(f'tr[data-domain="{fleet.domain}"]')
    expect(site.locator(".badge-sync")).to_have_text("Synced")
    site.click()
    detail = page.locator(f'tr[data-detail-for="{fleet.domain}"]')
    expect(detail.locator("tr[data-release]")).to_have_count(2)  # one row per release
    newest, older = detail.locator(f'tr[data-release="{second}"]'), detail.locator(f'tr[data-release="{first}"]')
    expect(newest.locator(".badge-active")).to_have_count(1)
    expect(newest.locator('[data-action="rollback"]')).to_have_count(0)
    expect(older.locator('[data-action="rollback"]')).to_have_count(1)
    badges = [f"{server} success" for server in fleet.targets] if fleet.shape == "two" else []
    for row in (newest, older):
        expect(row.locator(".server-result")).to_have_text(badges)

    if fleet.shape == "two":  # a server's badge shows that server's output
        newest.locator(f'.server-result[data-server="{fleet.last.destination}"]').click()
        log_panel = page.locator("#log")
        expect(log_panel.locator(".title")).to_contain_text(fleet.last.destination)
        expect(log_panel).to_contain_text(f"built-in-{second}")
        expect(log_panel).to_contain_text("finished")
        page.locator('[data-action="close-log"]').click()

    shot = fleet.tmp / "dashboard-servers.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard screenshot: {shot}")

    # Rollback where it is offered is accepted, and every server switches.
    older.locator('[data-action="rollback"]').click()
    where = ("On server " if fleet.shape == "one" else "On servers ") + ", ".join(fleet.targets)
    confirm(page, f"Roll back {fleet.domain} to release {first}?", where)  # names every server
    expect(page.locator("#notice")).to_contain_text(f"Rollback of {fleet.domain} to {first}")
    expect(page.locator("#notice")).to_contain_text("accepted")
    wait_until(lambda: fleet.live() == [first] * len(fleet.servers), 60, f"{first} live on every server",
               daemon.tail)
    expect(older.locator(".badge-active")).to_have_count(1)
    expect(newest.locator('[data-action="rollback"]')).to_have_count(1)
    expect(detail.locator("tr[data-release]")).to_have_count(2)
    assert not js_errors, js_errors
    page.close()
    assert daemon.stop() == 0, daemon.tail()
    assert [(h["release"], h["is_active"]) for h in launcher.history(fleet.domain)] == [(second, False), (first, True)]
