"""SshOptions (remote/transport/options.py): the SSH settings' defaults, a frozen value, and a
module apart from the SSH transport so that local-only runs never import asyncssh."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.remote.transport.options import SshOptions


def test_defaults_verify_with_the_users_own_files_and_bound_every_wait() -> None:
    options = SshOptions()
    assert (options.identity_file, options.known_hosts, options.ssh_config) == (None, None, None)
    assert (options.connect_timeout, options.keepalive_interval) == (15.0, 15.0)


def test_options_are_a_frozen_value() -> None:
    options = SshOptions(identity_file=Path("/k"), known_hosts=Path("/kh"), connect_timeout=3.0)
    assert options == SshOptions(Path("/k"), Path("/kh"), None, 3.0)
    assert options != SshOptions(Path("/k"), Path("/kh"), None, 4.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.connect_timeout = 1.0  # type: ignore[misc]


def test_importing_the_options_does_not_import_asyncssh() -> None:
    code = ("import sys\nfrom reconciler.remote.transport.options import SshOptions\n"
            "SshOptions()\nprint('asyncssh' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, "False\n"), done.stderr
