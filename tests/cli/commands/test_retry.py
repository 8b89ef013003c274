"""`reconciler retry D [--no-wait]`: forgets a site's remembered failure and builds now; with
--no-wait only records the request (the next pass builds, where without the retry it would not
try again). Nothing to retry, or an unknown site: exit 1. The cause of the failure here is a file
the script needs, made to appear without any new commit. Sites use `server = "local"`."""

from __future__ import annotations

import pytest

from tests.support.cli_world import DOMAIN, CliWorld


@pytest.fixture(name="failed")
def failed_fixture(world: CliWorld) -> CliWorld:
    """A site whose first build failed because `mirror-up` is missing; it is remembered."""
    world.declare(script=f"test -e {world.tmp / 'mirror-up'}\necho built\n")
    assert world.cli("reconcile").rc == 1
    assert world.status()[DOMAIN]["sync"] == "Failed"
    (world.tmp / "mirror-up").touch()
    assert world.cli("reconcile").rc == 1, "a remembered failure is not retried by a pass"
    assert world.active() is None and len(world.releases()) == 1, "the failed build is kept, not live"
    return world


def test_retry_forgets_the_failure_and_builds_now(failed: CliWorld) -> None:
    rc, out, err = failed.cli("retry", DOMAIN)
    assert rc == 0, (out, err)
    assert out.startswith(f"{DOMAIN}: forgot 1 remembered failure; retrying now (a failed build is built "
                          "again, a failed health check checked again)\n"), out
    assert f"{DOMAIN}: Synced/Healthy" in out
    assert len(failed.releases()) == 2 and failed.active() == failed.releases()[-1]


def test_retry_no_wait_only_records_it_for_the_next_pass(failed: CliWorld) -> None:
    rc, out, err = failed.cli("retry", DOMAIN, "--no-wait")
    assert (rc, out) == (0, f"{DOMAIN}: forgot 1 remembered failure; queued; no daemon runs here: "
                            f"`reconciler reconcile --site {DOMAIN}` builds it\n"), err
    assert failed.active() is None and len(failed.releases()) == 1, "--no-wait builds nothing itself"
    failed.ok("reconcile")
    assert len(failed.releases()) == 2 and failed.active() == failed.releases()[-1]


def test_nothing_to_retry_or_an_unknown_site_is_exit_1(world: CliWorld) -> None:
    world.declare(script="echo built\n")
    world.ok("reconcile")
    rc, out, err = world.cli("retry", DOMAIN)
    assert rc == 1 and "nothing to retry" in err and f"reconciler redeploy {DOMAIN}" in err, (out, err)
    rc, out, err = world.cli("retry", "nope.example.com")
    assert rc == 1 and "nope.example.com" in err, (out, err)
