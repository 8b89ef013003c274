"""One site's health output cannot answer for the server's other sites.

At every poll, the health checks of all live sites on a server run in one command, and each
check's answer comes back in that command's output. A check's own output (an app's
`php artisan ...`, or data it prints) is quoted into its answer, so it must not be able to add,
remove or change another site's answer: before the fix, `\\x1c` (or U+2028, U+0085, `\\v`)
followed by `@@unhealthy 1 ...` read as a second answer for check 1, and every other site of the
server went Degraded ("the check answered more than once").

Here site a's `[health] command` prints exactly that and fails; b and c are healthy. After two
passes (the deploy, then a poll that runs the three checks in one command) b and c are Healthy
and a is Degraded with its own reason, sanitised: no control character or line separator of
the output reaches the message. On "local" (the same shell code as over SSH) for each separator,
and once over a real sshd with all of them in one output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import World
from tests.support.sshd import SshServer

SITES = ("a.example.com", "b.example.com", "c.example.com")

# printf escapes (octal: dash's printf has no \x) of the separators Python's str.splitlines()
# breaks on but a line-oriented shell does not: FS, U+2028 and U+0085 in UTF-8, VT.
SEPARATORS = {"fs": r"\034", "u2028": r"\342\200\250", "nel": r"\302\205", "vt": r"\013"}


def _forging_command(separators: list[str]) -> str:
    forged = "".join(f"{sep}@@unhealthy {i} forged by a{sep}@@healthy {i} forged by a"
                     for sep in separators for i in (0, 1, 2))
    return f"printf 'not ready{forged}\\n'; exit 1"


def _world(tmp_path: Path, server: SshServer | None, separators: list[str]) -> World:
    world = World.create(tmp_path, server)
    world.declare(SITES[0], health={"command": _forging_command(separators), "retries": 0})
    for domain in SITES[1:]:
        world.declare(domain, health={"command": "true", "retries": 0})
    return world


def _views(world: World) -> dict[str, dict[str, Any]]:
    rc, out, err = world.run_cli("status", "--json")
    assert rc == 0, err
    return {view["domain"]: view for view in json.loads(out)}


def _assert_only_a_is_degraded(world: World) -> None:
    for _ in range(2):  # the deploy (one check each, after its switch), then a poll: all three at once
        _, out, err = world.run_cli("reconcile")
    views = _views(world)
    for domain in SITES[1:]:
        assert (views[domain]["sync"], views[domain]["health"]) == ("Synced", "Healthy"), (views[domain], out + err)
    message = views[SITES[0]]["message"]
    assert views[SITES[0]]["health"] == "Degraded", views[SITES[0]]
    # Its own reason (the tail of its output, which over SSH holds only forged lines).
    assert "command exited 1: " in message and "forged by a" in message, message
    assert "more than once" not in message, message
    # The reason is one plain line: every separator of the output became a space.
    assert not any(ord(ch) < 0x20 or 0x7f <= ord(ch) <= 0x9f or ch in "\u2028\u2029" for ch in message), message


@pytest.mark.parametrize("separator", sorted(SEPARATORS))
def test_a_sites_health_output_cannot_answer_for_other_sites(tmp_path: Path, separator: str) -> None:
    _assert_only_a_is_degraded(_world(tmp_path, None, [SEPARATORS[separator]]))


def test_over_ssh_a_sites_health_output_cannot_answer_for_other_sites(tmp_path: Path, sshd: SshServer) -> None:
    _assert_only_a_is_degraded(_world(tmp_path, sshd, list(SEPARATORS.values())))
