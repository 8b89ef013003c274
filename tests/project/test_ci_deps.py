"""`make test` on a fresh machine: `.ci/deps` names every missing system part
and the exact install line when it cannot install them itself, and never fails the run for it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_missing_parts_are_named_with_the_install_line(tmp_path: Path) -> None:
    # A PATH with the shell's basics only: no sshd, nginx, gpg, chromium, systemd-analyze or apt-get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "id", "python3", "git", "ssh-keygen", "printf", "echo"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    done = subprocess.run([str(bin_dir / "bash"), str(ROOT / ".ci" / "deps")], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(bin_dir)}, timeout=60, check=False)
    assert done.returncode == 0, done
    line = next(line for line in done.stderr.splitlines() if "apt-get install" in line)
    for package in ("nginx-light", "gnupg", "systemd"):
        assert package in line, done.stderr
    if not Path("/usr/sbin/sshd").exists():
        assert "openssh-server" in line
    if not Path("/usr/bin/chromium").exists():
        assert "chromium" in line
