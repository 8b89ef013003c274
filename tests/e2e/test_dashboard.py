"""End to end: the dashboard page in a real headless Chromium, against the REAL daemon.

`reconciler run` is started as a separate process with `listen` and `api_token`, one site on
the local transport. The browser (Debian's /usr/bin/chromium driven by Playwright; the
Playwright-managed browsers are never downloaded) loads the page and uses it like an operator
would: it signs in with the token (a wrong one is refused), after which the session cookie
alone (HttpOnly: the page's script never sees it) carries every read, both event streams and
the rollback; the site turns Synced, a new app commit shows up as a new Active deployment
without a reload, a deployment's output streams into the log panel, a Rollback click pins the
older release, which the daemon then switches to on disk, and signing out ends the session on
the server too. Without the cookie or the token, the API answers 401.

The operator actions: a site whose build fails (its script checks a marker file) shows
the failed row's reason and a Retry button; once the cause is fixed, Retry makes it live;
Redeploy builds a fresh release; Rollback pins an older one and Unpin lets it follow its branch
again, each switch shown as an activation line. Rollback, Unpin and Redeploy first ask for
confirmation naming the site, the release and the servers; cancelled (the button, Escape),
nothing is sent. The page header says who is signed in: the name of the token used (a named
`[[api_token]]` read from an owner-only file), which every row's "who asked" and the pin commit's
author carry; a refused action shows the server's message; text from commits is shown as text,
never markup; and closing the page leaves no traceback in the daemon's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import Daemons, World, app_commit, free_port, git
from tests.support.client import call
from tests.support.dashboard import confirm

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOMAIN = "shop.example.com"
TOKEN = "secret-token"
ANA = "ana-token-0123456789abcdef"
MARKER = "dashboard-build-marker"
DEPLOY_MS = 60_000  # bound for a deploy (clone, script) to show up in the page, in Playwright's milliseconds


def _request(url: str, *, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET, or a POST when `body` is given; HTTP errors included."""
    answer = call(url, json_body=body, headers=headers, timeout=10)
    return answer.status, answer.json()


def _serving(world: World, root: str) -> Any:
    """The daemon started, once its HTTP endpoint answers an authorised request."""
    daemon = world.start_daemon()

    def answering() -> bool:
        assert daemon.alive(), "the daemon exited"
        return _request(root + "/api/sites", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 200

    world.wait(answering, f"the daemon's HTTP endpoint on {root}")
    return daemon


def _page(browser: Any, root: str) -> tuple[Any, list[str], list[str]]:
    """A new page, and the lists its JavaScript errors and its requests anywhere but `root` go to."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(DEPLOY_MS)
    js_errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda exc: js_errors.append(str(exc)))
    page.on("request", lambda req: None if req.url.startswith(root + "/") else foreign.append(req.url))
    return page, js_errors, foreign


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: the dashboard test needs Debian's Chromium "
                    "(apt-get install -y chromium); Playwright's own browser downloads are not used", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python Playwright is missing: pip install -e '.[dev]'", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def test_dashboard_live_updates_log_and_rollback(tmp_path: Path, browser: Any, daemons: Daemons) -> None:
    from playwright.sync_api import expect

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    world = World.create(tmp_path, daemons=daemons, interval=2, listen=f"127.0.0.1:{port}", api_token=TOKEN)
    app = world.app
    world.declare(DOMAIN, script=f"echo {MARKER} $(git rev-parse --short HEAD)\n")
    site = world.on_disk(DOMAIN)
    _serving(world, root)
    status, body = _request(root + "/api/sites")  # no cookie, no token
    assert status == 401 and "error" in body, (status, body)

    page, js_errors, foreign = _page(browser, root)

    # Signed out, the page asks for the token and shows nothing else; a wrong token is refused.
    page.goto(root + "/")
    expect(page.locator("h1")).to_have_text("reconciler")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#sites-card")).to_be_hidden()
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    page.fill("#token", "wrong-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("401")
    expect(page.locator("#signin")).to_be_visible()
    assert page.context.cookies() == []

    # The right token: a session cookie, HttpOnly and SameSite=Strict; the token is kept nowhere.
    page.fill("#token", TOKEN)
    page.click("#login button[type=submit]")
    expect(page.locator("#signin")).to_be_hidden()
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("#who")).to_have_text("Signed in as api")  # the single api_token's name
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["reconciler_session"], cookies
    session = cookies[0]
    assert session["httpOnly"] and session["sameSite"] == "Strict" and session["path"] == "/", session
    assert page.evaluate("document.cookie") == "", "the script can read the session cookie"
    assert TOKEN not in page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
    assert page.input_value("#token") == ""
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    row = page.locator(f'tr[data-domain="{DOMAIN}"]')
    expect(row.locator(".badge-sync")).to_have_text("Synced")
    expect(row.locator(".badge-health")).to_have_text("Healthy")
    expect(page.locator("#summary")).to_contain_text("1 synced")

    row.click()  # expands the site: its deployments
    deployments = page.locator(f'tr[data-detail-for="{DOMAIN}"] tr[data-release]')
    expect(deployments).to_have_count(1)
    first = deployments.first.get_attribute("data-release")
    assert first is not None
    expect(page.locator(f'tr[data-release="{first}"] .badge-active')).to_have_count(1)
    expect(row.locator(".release")).to_have_text(first)
    expect(page.locator(f'tr[data-release="{first}"] [data-action="rollback"]')).to_have_count(0)

    # A new app commit: the page shows the new deployment, then makes it Active, no reload.
    head = app_commit(app, "v2")
    expect(deployments).to_have_count(2)
    second = deployments.first.get_attribute("data-release")
    assert second is not None and second != first
    newest = page.locator(f'tr[data-release="{second}"]')
    expect(newest.locator(".badge-active")).to_have_count(1)
    expect(page.locator(f'tr[data-release="{first}"] .badge-active')).to_have_count(0)
    expect(row.locator(".commit")).to_have_text(head[:7])
    expect(row.locator(".badge-sync")).to_have_text("Synced")
    expect(newest.locator('[data-action="rollback"]')).to_have_count(0)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    # The deployment's output streams into the log panel (an EventSource: the cookie goes along).
    newest.locator('[data-action="log"]').click()
    log_panel = page.locator("#log")
    expect(log_panel).to_be_visible()
    expect(log_panel).to_contain_text(f"{MARKER} {head[:7]}")
    expect(log_panel).to_contain_text("finished")
    assert site.active() == second

    # Rollback on the session cookie: the older release gets pinned, then switched to by the daemon.
    older = page.locator(f'tr[data-release="{first}"]')
    older.locator('[data-action="rollback"]').click()
    confirm(page, f"Roll back {DOMAIN} to release {first}?", "On server local", f"replaces the live release {second}")
    expect(page.locator("#notice")).to_contain_text(f"to {first}")
    expect(page.locator("#notice")).to_contain_text("accepted")
    expect(older.locator(".badge-active")).to_have_count(1)
    expect(newest.locator(".badge-active")).to_have_count(0)
    expect(newest.locator('[data-action="rollback"]')).to_have_count(1)
    expect(row.locator(".pinned")).to_have_text(first)
    expect(row.locator(".release")).to_have_text(first)
    world.wait(lambda: site.active() == first, f"the site symlink to point at {first}")
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    # The API itself: no token, 401; an impossible release, 409. The browser's cookie works
    # outside the browser too (it is a bearer of the session), until the session ends.
    status, body = _request(f"{root}/api/sites/{DOMAIN}/rollback", body={"release": second})
    assert status == 401 and "error" in body, (status, body)
    status, body = _request(f"{root}/api/sites/{DOMAIN}/rollback", body={"release": "not-a-release"},
                            headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 409 and "error" in body, (status, body)
    assert site.active() == first
    with_cookie = {"Cookie": f"reconciler_session={session['value']}"}
    assert _request(root + "/api/sites", headers=with_cookie)[0] == 200

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"dashboard screenshot: {shot}")

    # Signing out ends the session on the server: the page asks for the token again, and the
    # old cookie value is refused wherever it comes from.
    page.click("#logout")
    expect(page.locator("#signin")).to_be_visible()
    expect(page.locator("#who")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "signed-out.png"), full_page=True)
    expect(page.locator("#sites-card")).to_be_hidden()
    assert page.evaluate("fetch('/api/sites').then((r) => r.status)") == 401
    status, body = _request(root + "/api/sites", headers=with_cookie)
    assert status == 401, (status, body)
    assert page.evaluate("window.__sameDocument === true"), "the page reloaded"

    # A token in the fragment signs a fresh browser in at once and leaves the address bar.
    other = browser.new_page()
    other.goto(f"{root}/#token={TOKEN}")
    expect(other.locator(f'tr[data-domain="{DOMAIN}"] .badge-sync')).to_have_text("Synced")
    assert "token" not in other.url
    assert TOKEN not in other.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
    other.close()

    assert not js_errors, f"JavaScript errors on the page: {js_errors}"
    assert not foreign, f"the page loaded something not from the daemon: {foreign}"
    with contextlib.suppress(Exception):
        page.close()


def test_dashboard_retry_redeploy_rollback_unpin_and_reasons(tmp_path: Path, browser: Any, daemons: Daemons) -> None:
    from playwright.sync_api import expect

    port = free_port()
    root = f"http://127.0.0.1:{port}"
    mirror = tmp_path / "mirror-is-up"
    # No interval polls: every pass here is asked for (start, the buttons, pin commits), so nothing
    # changes the page between the test's steps behind its back.
    world = World.create(tmp_path, daemons=daemons, interval=3600, listen=f"127.0.0.1:{port}")
    # Named tokens: Ana's in an owner-only file (she signs in with it), and the test's own as a
    # SHA-256 (its bearer reads are "ci").
    ana_file = tmp_path / "ana.token"
    ana_file.write_text(ANA + "\n")
    ana_file.chmod(0o600)
    world.config.write_text(world.config.read_text() +
                            f'\n[[api_token]]\nname = "Ana"\ntoken_file = "{ana_file}"\n'
                            f'\n[[api_token]]\nname = "ci"\nsha256 = "{hashlib.sha256(TOKEN.encode()).hexdigest()}"\n')
    subject = 'v2 <img src=x onerror="window.__injected = 1"> & <b>bold</b>'
    head = app_commit(world.app, subject)
    world.declare(DOMAIN, script=f"test -e {mirror} || {{ echo 'the package mirror is down'; exit 3; }}\n"
                                 f"echo {MARKER} $(git rev-parse --short HEAD)\n")
    site = world.on_disk(DOMAIN)
    daemon = _serving(world, root)
    page, js_errors, foreign = _page(browser, root)
    page.goto(f"{root}/#token={ANA}")
    notice = page.locator("#notice")
    expect(page.locator("#who")).to_have_text("Signed in as Ana")

    # The first build fails: the site is Failed, its row says why, and Retry is offered.
    row = page.locator(f'tr[data-domain="{DOMAIN}"]')
    expect(row.locator(".badge-sync")).to_have_text("Failed")
    row.click()
    detail = page.locator(f'tr[data-detail-for="{DOMAIN}"]')
    deployments = detail.locator("tr[data-release]")
    expect(deployments).to_have_count(1)
    failed = deployments.first
    expect(failed.locator(".badge-status")).to_have_text("failed")
    expect(failed.locator(".reason")).to_contain_text("deploy script failed (exit 3)")
    expect(failed.locator(".trigger")).to_contain_text("first deploy")
    # The commit's subject is text on the page, never markup.
    expect(failed.locator(".subject")).to_have_text(subject)
    assert page.evaluate("document.querySelectorAll('tr img, tr b').length") == 0
    assert page.evaluate("window.__injected === undefined")
    retry = detail.locator('[data-action="retry"]')
    redeploy = detail.locator('[data-action="redeploy"]')
    unpin = detail.locator('[data-action="unpin"]')
    expect(retry).to_be_visible()
    expect(redeploy).to_be_visible()
    expect(unpin).to_have_count(0)
    assert site.active() is None

    # The cause fixed outside git, Retry builds again now: live, recorded as asked from here.
    mirror.touch()
    retry.click()
    expect(notice).to_contain_text(f"Retry of {DOMAIN} accepted")
    expect(row.locator(".badge-sync")).to_have_text("Synced")
    expect(deployments).to_have_count(2)
    live = deployments.first
    expect(live.locator(".badge-active")).to_have_count(1)
    expect(live.locator(".badge-status")).to_have_text("success")
    expect(live.locator(".trigger")).to_have_text("retry (Ana)")
    expect(live.locator(".reason")).to_have_text("")
    expect(retry).to_have_count(0)
    first = live.get_attribute("data-release")
    assert first is not None
    world.wait(lambda: site.active() == first, f"{first} live on disk")
    expect(page.locator(f'tr[data-release="{first}"] .badge-active')).to_have_count(1)

    # Redeploy asks first, naming the live release and the server; cancelled, nothing happens.
    redeploy.click()
    dialog = page.locator("#confirm")
    expect(dialog).to_contain_text(f"Redeploy {DOMAIN}, replacing release {first}?")
    expect(dialog).to_contain_text("On server local")
    expect(dialog).to_contain_text(head[:7])
    page.screenshot(path=str(tmp_path / "dashboard-confirm.png"))
    dialog.locator("button[value=cancel]").click()
    expect(dialog).to_be_hidden()
    expect(notice).not_to_contain_text("Redeploy")
    expect(redeploy).to_have_text("Redeploy")  # not busy: nothing was sent

    # Confirmed: the same commit, a fresh release, switched to.
    redeploy.click()
    confirm(page, f"Redeploy {DOMAIN}, replacing release {first}?", "On server local")
    expect(notice).to_contain_text(f"Redeploy of {DOMAIN} accepted")
    expect(deployments).to_have_count(3)
    newest = deployments.first
    expect(newest.locator(".badge-active")).to_have_count(1)
    second = newest.get_attribute("data-release")
    assert second is not None and second != first
    fresh = page.locator(f'tr[data-release="{second}"]')
    expect(fresh.locator(".trigger")).to_have_text("redeploy (Ana)")
    expect(fresh.locator(".commit .mono")).to_have_text(head[:7])
    world.wait(lambda: site.active() == second, f"the redeployed {second} live on disk")
    assert site.commit_of(second) == site.commit_of(first) == head

    # Rollback pins the older release; then only Unpin is offered, and it follows the branch again.
    older = page.locator(f'tr[data-release="{first}"]')
    tip = world.tip()
    older.locator('[data-action="rollback"]').click()  # Escape cancels: nothing committed
    expect(page.locator("#confirm")).to_contain_text(f"Roll back {DOMAIN} to release {first}?")
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()
    assert world.tip() == tip
    older.locator('[data-action="rollback"]').click()
    confirm(page, f"Roll back {DOMAIN} to release {first}?", "On server local", f"replaces the live release {second}")
    expect(notice).to_contain_text(f"Rollback of {DOMAIN} to {first}")
    expect(row.locator(".pinned")).to_have_text(first)
    expect(older.locator(".badge-active")).to_have_count(1)
    expect(detail.locator(f'tr.activation[data-activation-of="{first}"]')).to_contain_text("rollback (Ana)")
    assert git(world.decl, "log", "-1", "--format=%an|%cn", "main") == "Ana|reconciler"
    expect(detail.locator(f'tr.activation[data-activation-of="{first}"]')).to_contain_text(f"from {second}")
    world.wait(lambda: site.active() == first, f"the rollback to {first} on disk")
    expect(unpin).to_be_visible()
    expect(redeploy).to_have_count(0)
    tip = world.tip()
    unpin.click()
    confirm(page, f"Unpin {DOMAIN} from release {first}?", "On server local")
    expect(notice).to_contain_text(f"Unpin of {DOMAIN} accepted")
    expect(row.locator(".pinned")).to_have_text("\u2014")
    expect(redeploy).to_be_visible()
    expect(unpin).to_have_count(0)
    assert world.tip() != tip and "pin" not in git(world.decl, "show", f"main:sites.d/{DOMAIN}.toml")
    # Both releases are builds of the branch's commit: following it again needs no switch.
    expect(row.locator(".badge-sync")).to_have_text("Synced")
    expect(older.locator(".badge-active")).to_have_count(1)
    expect(deployments).to_have_count(3)  # a switch, never a build
    assert site.active() == first

    # A refusal shows the server's message: a release removed from the server by hand is still
    # in history (no pass since), but the server is asked, and nothing is committed.
    tip = world.tip()
    shutil.rmtree(site.release(second))
    fresh.locator('[data-action="rollback"]').click()
    confirm(page, f"Roll back {DOMAIN} to release {second}?")
    expect(notice).to_contain_text("Rollback refused (409)")
    expect(notice).to_contain_text(f"release {second} is not on local")
    assert world.tip() == tip
    expect(row.locator(".pinned")).to_have_text("\u2014")

    page.screenshot(path=str(tmp_path / "dashboard-actions.png"), full_page=True)
    assert not js_errors, f"JavaScript errors on the page: {js_errors}"
    assert not foreign, f"the page loaded something not from the daemon: {foreign}"
    assert page.evaluate("window.__injected === undefined")

    # Closing the tab (its event stream with it) is no error in the daemon's log.
    page.close()
    assert daemon.stop() == 0, daemon.tail()
    lines = daemon.output().splitlines()
    assert not [line for line in lines if "Traceback" in line or "Error" in line], daemon.tail()
