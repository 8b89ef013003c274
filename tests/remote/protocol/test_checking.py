"""The health command (remote/protocol/checking.py) run by a real /bin/sh against release
directories in tmp_path and a real HTTP server on 127.0.0.1, read back with `parse_results`:
what each kind of check answers, healthy or not and why, and examples of the strict reader.

Any output and any bytes a check prints are tests/properties/test_health_answers.py's.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.core.health import HealthCheck
from reconciler.remote.protocol import checking, seam
from reconciler.remote.protocol.checking import HealthResult, frame, parse_results
from tests.support.webapp import SiteServer

DOMAIN = "shop.example.com"


def run(*checks: tuple[Path, str, HealthCheck]) -> list[HealthResult]:
    command = checking.health((str(release), host, check) for release, host, check in checks)
    done = subprocess.run(seam.local_argv(command.text), input=command.stdin, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return parse_results(done.stdout, len(checks))


def command_check(code: str, **fields: object) -> HealthCheck:
    return HealthCheck.model_validate({"command": code, "retries": 0, "interval": 0.0, "timeout": 10.0, **fields})


@pytest.fixture
def release(tmp_path: Path) -> Path:
    path = tmp_path / "srv" / "deployments" / DOMAIN / "01082025-090000"
    (path / "public").mkdir(parents=True)
    return path


@pytest.fixture
def web(tmp_path: Path, release: Path) -> Iterator[SiteServer]:
    """Serves the site through its symlink, as nginx would: /up answers public/health."""
    (tmp_path / "srv" / DOMAIN).symlink_to(release)
    server = SiteServer(tmp_path / "srv")
    try:
        yield server
    finally:
        server.stop()


def answer_with(release: Path, status: int, body: str = "") -> None:
    (release / "public" / "health").write_text(f"{status}\n{body}")


# --- command checks -------------------------------------------------------------------------------------


def test_a_command_check_runs_in_its_release_and_passes_on_exit_zero(release: Path) -> None:
    (release / "marker").write_text("x")
    assert run((release, DOMAIN, command_check("test -f marker"))) == [HealthResult(True, "command exited 0")]


def test_a_failing_command_is_unhealthy_with_its_exit_status_output_and_tries(release: Path) -> None:
    tries = release / "tries"
    check = command_check(f"echo try >> {tries}; echo 'database down' >&2; exit 3", retries=2)
    [result] = run((release, DOMAIN, check))
    assert result == HealthResult(False, "command exited 3: database down (after 3 tries)")
    assert tries.read_text() == "try\n" * 3, "retried `retries` times after the first try"


def test_a_command_that_recovers_on_a_retry_is_healthy(release: Path) -> None:
    check = command_check("[ -f second ] && exit 0; touch second; exit 1", retries=1)
    assert run((release, DOMAIN, check)) == [HealthResult(True, "command exited 0")]


def test_a_missing_release_directory_is_unhealthy_without_running_the_check(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    [result] = run((tmp_path / "gone", DOMAIN, command_check(f"touch {canary}")))
    assert result == HealthResult(False, "the release directory is missing")
    assert not canary.exists()


def test_whatever_a_command_prints_its_detail_is_one_bounded_printable_line(release: Path) -> None:
    check = command_check(r"printf 'x%.0s' $(seq 500); printf 'line one\nline\ttwo \033[2J \342\200\250 end'; exit 1")
    [result] = run((release, DOMAIN, check))
    assert not result.ok
    assert result.detail.startswith("command exited 1: xxx")
    assert result.detail.endswith("xxxline one line two [2J end (after 1 try)")
    assert result.detail.isprintable() and result.detail.isascii()
    assert len(result.detail) <= checking.MAX_REASON


def test_checks_answer_in_order_each_for_itself(release: Path, tmp_path: Path) -> None:
    results = run((release, DOMAIN, command_check("exit 1")), (tmp_path / "gone", DOMAIN, command_check("true")),
                  (release, DOMAIN, command_check("true")))
    assert results == [HealthResult(False, "command exited 1 (after 1 try)"),
                       HealthResult(False, "the release directory is missing"),
                       HealthResult(True, "command exited 0")]


# --- url checks ---------------------------------------------------------------------------------------


def test_a_url_check_asks_with_the_sites_host_header_and_judges_the_status(release: Path, web: SiteServer) -> None:
    answer_with(release, 204)
    check = HealthCheck(url=web.url, retries=0, interval=0.0)
    assert run((release, DOMAIN, check)) == [HealthResult(True, "HTTP 204")]
    [other_host] = run((release, "other.example.com", check))  # the server knows no such site: 404
    assert other_host == HealthResult(False, "HTTP 404 (after 1 try)")
    answer_with(release, 503)
    assert run((release, DOMAIN, check)) == [HealthResult(False, "HTTP 503 (after 1 try)")]
    assert run((release, DOMAIN, check.model_copy(update={"status": "500-503"}))) == [HealthResult(True, "HTTP 503")]


def test_a_url_check_with_contains_needs_the_text_in_the_body(release: Path, web: SiteServer) -> None:
    answer_with(release, 200, "status: all good\n")
    check = HealthCheck(url=web.url, contains="all good", retries=0, interval=0.0)
    assert run((release, DOMAIN, check)) == [HealthResult(True, "HTTP 200")]
    answer_with(release, 200, "status: degraded\n")
    assert run((release, DOMAIN, check)) == [HealthResult(False, "HTTP 200, expected text missing (after 1 try)")]


def test_a_url_nobody_answers_is_a_failed_request(release: Path) -> None:
    from tests.support.net import free_port

    check = HealthCheck(url=f"http://127.0.0.1:{free_port()}/up", retries=0, interval=0.0)
    [result] = run((release, DOMAIN, check))
    # curl says why, with its exit code, once: "request failed: curl: (7) Failed to connect ..."
    assert not result.ok and result.detail.startswith("request failed: curl: (7) "), result
    assert result.detail.count("(7)") == 1 and "curl exit" not in result.detail, result


# --- the reader -----------------------------------------------------------------------------------------


def test_each_record_answers_for_the_check_it_names() -> None:
    text = frame(True, 1, "HTTP 200") + frame(False, 0, "HTTP 500")
    assert parse_results(text, 2) == [HealthResult(False, "HTTP 500"), HealthResult(True, "HTTP 200")]


def test_a_check_without_exactly_one_wellformed_answer_is_unhealthy() -> None:
    text = (frame(True, 0, "HTTP 200") + frame(True, 0, "HTTP 200")   # 0 answered twice
            + frame(True, 1, "line\nbreak")                             # 1: not what the writer prints
            + frame(True, 3, "HTTP 200")                                # no check 3: nobody's
            + "@@healthy 2 HTTP 200")                                   # cut short: nobody's
    assert parse_results(text, 3) == [HealthResult(False, checking.ANSWERED_TWICE),
                                      HealthResult(False, checking.MALFORMED),
                                      HealthResult(False, checking.NO_ANSWER)]
    assert parse_results("", 2) == [HealthResult(False, checking.NO_ANSWER)] * 2
    assert parse_results(frame(True, 0, "HTTP 200"), 0) == []
