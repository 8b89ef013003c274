"""The process's way out (`reconciler.cli.entry`): the exit status is the command's, everything
printed reaches the reader, exit functions run, a thread still alive is waited for, and a
standard output that cannot be flushed is a failure. Real processes through `python -m
reconciler` and through `entry()` itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import make_decl_repo, write_site

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=60)


def _entry_script(body: str, *argv: str) -> str:
    """A script that prepares something, then leaves through `entry()` with `argv`."""
    return (f"import sys\n{body}\nsys.argv = ['reconciler', *{list(argv)!r}]\n"
            "from reconciler.cli.entry import entry\nentry()\n")


def test_the_exit_status_and_every_line_printed_reach_the_caller(tmp_path: Path) -> None:
    """A command's status (0, 1, 2) is the process's, and its whole output arrives through a pipe."""
    decl = make_decl_repo(tmp_path / "decl")
    for n in range(300):
        write_site(decl, f"site{n:03d}.example.com", server="deploy@127.0.0.1", base_path=str(tmp_path / "srv"),
                   repository=str(tmp_path / "app"), commit=False)
    (decl / "sites.d" / "bad.example.com.toml").write_text('server = "deploy@127.0.0.1"\nkeep = 0\n')
    done = _run("-m", "reconciler", "validate", str(decl / "sites.d"), cwd=tmp_path)
    assert done.returncode == 1
    assert "bad.example.com" in done.stdout + done.stderr
    (decl / "sites.d" / "bad.example.com.toml").unlink()
    done = _run("-m", "reconciler", "validate", str(decl / "sites.d"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "300" in done.stdout
    done = _run("-m", "reconciler", "--state-dir", str(tmp_path / "none"), "status", "--exit-code", cwd=tmp_path)
    assert done.returncode == 2


def test_exit_functions_run_before_the_process_leaves(tmp_path: Path) -> None:
    """What a library registered with atexit (a temporary file's clean-up) still runs."""
    mark = tmp_path / "mark"
    body = f"import atexit, pathlib\natexit.register(pathlib.Path({str(mark)!r}).write_text, 'ran')"
    done = _run("-c", _entry_script(body, "--state-dir", str(tmp_path / "none"), "status"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "ran"


def test_a_thread_still_alive_is_waited_for(tmp_path: Path) -> None:
    """A non-daemon thread still working when the command returns finishes its work."""
    mark = tmp_path / "mark"
    body = ("import pathlib, threading, time\n"
            f"late = lambda: (time.sleep(0.5), pathlib.Path({str(mark)!r}).write_text('done'))\n"
            "threading.Thread(target=late).start()")
    done = _run("-c", _entry_script(body, "--state-dir", str(tmp_path / "none"), "status"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert mark.read_text() == "done"


def test_an_output_that_cannot_be_flushed_is_a_failure(tmp_path: Path) -> None:
    """Standard output gone (a closed pipe) turns a success into CPython's own status 120."""
    body = ("import io\n"
            "class Gone(io.RawIOBase):\n"
            "    def writable(self): return True\n"
            "    def write(self, b): raise BrokenPipeError(32, 'Broken pipe')\n"
            "sys.stdout = io.TextIOWrapper(io.BufferedWriter(Gone(), buffer_size=1 << 16))")
    done = _run("-c", _entry_script(body, "--state-dir", str(tmp_path / "none"), "status"), cwd=tmp_path)
    assert done.returncode == 120
