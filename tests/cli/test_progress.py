"""Live progress of `reconcile` (cli.progress): plain lines when piped, a redrawn line on a
terminal."""

from __future__ import annotations

import asyncio
import os
import pty
from pathlib import Path

from reconciler.cli.progress import Progress
from tests.support import make_app_repo, make_decl_repo, write_site
from tests.support.cli_world import cli_process

DOMAIN = "progress.example.com"


def test_piped_reconcile_prints_each_step(tmp_path: Path) -> None:
    app = make_app_repo(tmp_path / "app")
    decl = make_decl_repo(tmp_path / "decl")
    write_site(decl, DOMAIN, server="local", base_path=str(tmp_path / "srv"), repository=str(app))
    out, err = cli_process(tmp_path, "reconcile").communicate(timeout=60)
    steps = [line.split(": ", 1)[1] for line in err.splitlines() if line.startswith(f"{DOMAIN}: ")]
    assert steps[0] == "provision the layout"
    assert steps[1].startswith("deploy ")
    assert steps[2:] == ["clone", "script", "switch"], err  # the build links shared entries too
    assert "\033[" not in err, "no terminal control codes when piped"
    assert f"{DOMAIN}: Synced/Healthy" in out


def test_terminal_progress_redraws_one_line_with_elapsed_time() -> None:
    main_fd, other_fd = pty.openpty()
    try:
        stream = os.fdopen(other_fd, "w", closefd=False)

        async def go() -> None:
            progress = Progress(stream, live=True)
            progress.start()
            progress.step("a.example.com", "clone")
            progress.step("b.example.com", "script")
            await asyncio.sleep(0.5)
            await progress.stop()

        asyncio.run(go())
        stream.flush()
        seen = os.read(main_fd, 65536).decode()
    finally:
        os.close(main_fd)
        os.close(other_fd)
    assert "\r\033[K" in seen
    assert "a.example.com: clone" in seen and "b.example.com: script" in seen
    assert seen.count("\r\033[K") >= 3, "the line is redrawn while the steps run"
