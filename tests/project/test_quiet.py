"""No command prints a dependency's warnings: every module of the package imported in a fresh
interpreter with Python's default warning filters (what an operator's shell has) prints nothing.
cryptography 51 made asyncssh print ten lines of CryptographyDeprecationWarning on every SSH
command; the lock file holds cryptography back, and this test fails if a version that warns
comes in."""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys

import reconciler

IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
"""


def test_importing_every_module_prints_nothing() -> None:
    names = sorted(info.name for info in pkgutil.walk_packages(reconciler.__path__, "reconciler.")
                   if not info.name.endswith("__main__"))
    assert "reconciler.remote.transport.ssh" in names and "reconciler.service.webhooks" in names
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONDEVMODE")}
    done = subprocess.run([sys.executable, "-c", IMPORT_ALL, *names], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
